package metrics

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// URL is the /metrics URL of a machine serving on the default address.
func URL(ip net.IP) string {
	return "http://" + net.JoinHostPort(ip.String(), strconv.Itoa(DefaultPort)) + "/metrics"
}

// Scrape fetches and parses one /metrics page.
func Scrape(ctx context.Context, client *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return fams, nil
}

// Histogram is a histogram read back from /metrics, possibly the sum of
// several machines' (each engine observes only its own terms).
type Histogram struct {
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64 // upper bound → cumulative count
}

// AddHistogram adds the named family's histogram, if fams has it, to h.
func (h *Histogram) AddHistogram(fams map[string]*dto.MetricFamily, name string) {
	f := fams[name]
	if f == nil {
		return
	}
	if h.Buckets == nil {
		h.Buckets = map[float64]uint64{}
	}
	for _, m := range f.GetMetric() {
		hist := m.GetHistogram()
		if hist == nil {
			continue
		}
		h.Count += hist.GetSampleCount()
		h.Sum += hist.GetSampleSum()
		for _, b := range hist.GetBucket() {
			h.Buckets[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
}

// Quantile estimates the q-quantile (0 < q < 1) as Prometheus'
// histogram_quantile does: linearly within the bucket that holds it. It
// returns NaN for an empty histogram.
func (h *Histogram) Quantile(q float64) float64 {
	if h.Count == 0 {
		return math.NaN()
	}
	bounds := make([]float64, 0, len(h.Buckets))
	for b := range h.Buckets {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	rank := q * float64(h.Count)
	lower, below := 0.0, uint64(0)
	for _, b := range bounds {
		n := h.Buckets[b]
		if float64(n) >= rank {
			if math.IsInf(b, 1) {
				return lower // beyond the last bound: its lower edge, as Prometheus does
			}
			if n == below {
				return b
			}
			return lower + (b-lower)*(rank-float64(below))/float64(n-below)
		}
		lower, below = b, n
	}
	return lower
}

// Gauge sums the named gauge's or counter's series in fams whose labels
// include every pair in match.
func Gauge(fams map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	total := 0.0
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range match {
			ok = ok && labels[k] == v
		}
		if !ok {
			continue
		}
		switch {
		case m.GetGauge() != nil:
			total += m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			total += m.GetCounter().GetValue()
		case m.GetUntyped() != nil:
			total += m.GetUntyped().GetValue()
		}
	}
	return total
}
