package awsemu

func newSTS(e *Emulator) *queryService {
	return &queryService{e: e, namespace: "https://sts.amazonaws.com/doc/2011-06-15/", actions: map[string]func(query) (string, error){
		"GetCallerIdentity": func(query) (string, error) {
			return xt("Arn", "arn:aws:iam::"+e.opts.AccountID+":user/awsemu") +
				xt("UserId", "AIDAAWSEMUEXAMPLE0001") + xt("Account", e.opts.AccountID), nil
		},
	}}
}
