package driver

import (
	"bytes"
	"encoding/json"
	"os"

	"github.com/pulumi/pulumi/sdk/v3/go/auto/events"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"

	"github.com/nbms-deploy/nbms/policy/input"
	"github.com/nbms-deploy/nbms/policy/plugin"
	"github.com/nbms-deploy/nbms/policy/report"
	"github.com/nbms-deploy/nbms/policy/rules"
)

// The policy report re-evaluates the pack's rules (policy/rules) over what
// the engine planned or recorded, because the engine's own policy events
// carry no pass/fail per policy and `pulumi preview --json` drops them
// (pulumi/pulumi#18851). The engine's verdict is the one that gates; the
// report is the auditors' copy. Secrets stay redacted: the events and the
// exported state never hold them in plaintext, and they are reported as
// "cannot evaluate".

// reportFromPlan writes the report from a preview's step events, shaped as
// the `pulumi preview --json` document the offline audit reads.
func (r *run) reportFromPlan(evs []events.EngineEvent, res *Result) {
	type state struct {
		URN     string         `json:"urn"`
		Type    string         `json:"type"`
		Inputs  map[string]any `json:"inputs"`
		Outputs map[string]any `json:"outputs"`
	}
	type step struct {
		Op       string `json:"op"`
		URN      string `json:"urn"`
		NewState *state `json:"newState,omitempty"`
	}
	doc := struct {
		Steps []step `json:"steps"`
	}{Steps: []step{}}
	for _, ev := range evs {
		if ev.ResourcePreEvent == nil {
			continue
		}
		m := ev.ResourcePreEvent.Metadata
		s := step{Op: string(m.Op), URN: m.URN}
		if n := m.New; n != nil {
			s.NewState = &state{URN: n.URN, Type: n.Type, Inputs: n.Inputs, Outputs: n.Outputs}
		}
		doc.Steps = append(doc.Steps, s)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		r.printf("policy report: %v\n", err)
		return
	}
	resources, err := input.Preview(bytes.NewReader(data))
	r.writeReport(resources, err, "pulumi preview (engine events)", res)
}

// reportFromState writes the report from the exported state.
func (r *run) reportFromState(state apitype.UntypedDeployment, res *Result) {
	data, err := json.Marshal(map[string]json.RawMessage{"deployment": state.Deployment})
	if err != nil {
		r.printf("policy report: %v\n", err)
		return
	}
	resources, err := input.StackExport(bytes.NewReader(data))
	r.writeReport(resources, err, "pulumi stack export (after up)", res)
}

func (r *run) writeReport(resources []rules.Resource, err error, source string, res *Result) {
	if err == nil && len(resources) == 0 {
		r.printf("policy report: no resources to evaluate (the program registered none)\n")
		return
	}
	cfg := rules.Config{}
	if err == nil && r.opts.PolicyConfig != "" {
		var data []byte
		if data, err = os.ReadFile(r.opts.PolicyConfig); err == nil {
			cfg, err = rules.ParseConfig(data)
		}
	}
	if err != nil {
		r.printf("policy report: %v\n", err)
		return
	}
	rep := rules.Evaluate(resources, cfg)
	meta := report.Meta{Tool: plugin.PackName, Version: plugin.Version, Source: source}
	if err := report.WriteAll(r.opts.ReportDir, rep, meta); err != nil {
		r.printf("policy report: %v\n", err)
		return
	}
	s := report.Summarize(rep)
	r.printf("Policy report (%s): %d policies, %d passed, %d failed, %d cannot evaluate; %s/report.{md,html,json,sarif}\n",
		source, s.Policies, s.Passed, s.Failed, s.CannotEvaluate, r.opts.ReportDir)
	res.Report = r.opts.ReportDir
}
