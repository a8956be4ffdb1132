package config

import (
	"github.com/corral-dev/corral/clusterd/deployhook"
	"github.com/hashicorp/hcl/v2"
)

// DeployHook is the deploy_hook block: every machine serves a signed HTTPS
// webhook (POST /deploy) that writes its JSON body to Key, for a sidekick
// unit watching Key to act on.
//
//	deploy_hook {
//	  key    = "/coreos.com/deploy"
//	  port   = 9443
//	  secret = var.deploy_secret
//	}
type DeployHook struct {
	Key  string
	Port int
	// Secret signs requests (HMAC-SHA256). Empty means provision generates
	// one on the first up and keeps it in the cluster's state directory.
	Secret    string
	DeclRange hcl.Range
}

var deployHookSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "key"},
		{Name: "port"},
		{Name: "secret"},
	},
}

func decodeDeployHook(block *hcl.Block, ctx *hcl.EvalContext) (*DeployHook, hcl.Diagnostics) {
	h := &DeployHook{Key: deployhook.DefaultKey, Port: deployhook.DefaultPort, DeclRange: block.DefRange}
	content, diags := block.Body.Content(deployHookSchema)

	attr, d := decodeAttr(content, "key", ctx, &h.Key)
	diags = append(diags, d...)
	if attr != nil {
		if err := deployhook.CheckKey(h.Key); err != nil {
			diags = append(diags, attrError(attr, "Invalid key", err.Error()+"."))
		}
	}
	attr, d = decodeAttr(content, "port", ctx, &h.Port)
	diags = append(diags, d...)
	if attr != nil {
		if err := deployhook.CheckPort(h.Port); err != nil {
			diags = append(diags, attrError(attr, "Invalid port", err.Error()+"."))
		}
	}
	attr, d = decodeAttr(content, "secret", ctx, &h.Secret)
	diags = append(diags, d...)
	// An empty secret (a variable left at "") asks for a generated one.
	if attr != nil && h.Secret != "" {
		if err := deployhook.CheckSecret(h.Secret); err != nil {
			diags = append(diags, attrError(attr, "Invalid secret", err.Error()+"."))
		}
	}
	return h, diags
}
