package report

import (
	"encoding/json"
	"io"

	"github.com/nbms-deploy/nbms/policy/rules"
)

// SARIF 2.1.0 shapes, limited to what code-scanning tools read.
type (
	sarifLog struct {
		Schema  string     `json:"$schema"`
		Version string     `json:"version"`
		Runs    []sarifRun `json:"runs"`
	}
	sarifRun struct {
		Tool    sarifTool     `json:"tool"`
		Results []sarifResult `json:"results"`
	}
	sarifTool struct {
		Driver sarifDriver `json:"driver"`
	}
	sarifDriver struct {
		Name    string      `json:"name"`
		Version string      `json:"version"`
		Rules   []sarifRule `json:"rules"`
	}
	sarifText struct {
		Text string `json:"text"`
	}
	sarifRule struct {
		ID                   string         `json:"id"`
		ShortDescription     sarifText      `json:"shortDescription"`
		FullDescription      sarifText      `json:"fullDescription"`
		Help                 sarifText      `json:"help"`
		DefaultConfiguration sarifRuleLevel `json:"defaultConfiguration"`
		Properties           map[string]any `json:"properties"`
	}
	sarifRuleLevel struct {
		Level string `json:"level"`
	}
	sarifResult struct {
		RuleID     string          `json:"ruleId"`
		RuleIndex  int             `json:"ruleIndex"`
		Level      string          `json:"level"`
		Message    sarifText       `json:"message"`
		Locations  []sarifLocation `json:"locations"`
		Properties map[string]any  `json:"properties"`
	}
	sarifLocation struct {
		LogicalLocations []sarifLogicalLocation `json:"logicalLocations"`
	}
	sarifLogicalLocation struct {
		Name               string `json:"name"`
		FullyQualifiedName string `json:"fullyQualifiedName"`
		Kind               string `json:"kind"`
	}
)

// SARIFSchema is the schema URI the log declares.
const SARIFSchema = "https://json.schemastore.org/sarif-2.1.0.json"

// sarifLevel maps an enforcement level: mandatory findings block a
// deployment (error); advisory and cannot-evaluate ones do not (warning).
func sarifLevel(l rules.Level) string {
	switch l {
	case rules.Mandatory:
		return "error"
	case rules.Disabled:
		return "none"
	}
	return "warning"
}

// SARIF writes a SARIF 2.1.0 log: one rule per policy (id = policy name),
// one result per finding, located by the resource URN as a logical location
// (Pulumi resources have no source file position in the inputs we read).
func SARIF(w io.Writer, rep rules.Report, m Meta) error {
	driver := sarifDriver{Name: m.Tool, Version: m.Version, Rules: []sarifRule{}}
	index := map[string]int{}
	remediation := remediations(rep)
	for i, p := range rep.Policies {
		index[p.Name] = i
		driver.Rules = append(driver.Rules, sarifRule{
			ID:                   p.Name,
			ShortDescription:     sarifText{p.Description},
			FullDescription:      sarifText{p.Description},
			Help:                 sarifText{p.Remediation},
			DefaultConfiguration: sarifRuleLevel{sarifLevel(p.Level)},
			Properties:           map[string]any{"benchmark": p.Benchmark, "enforcementLevel": string(p.Level)},
		})
	}
	results := []sarifResult{}
	for _, f := range rep.Findings() {
		name, kind := f.URN, "resource"
		if name == "" {
			name, kind = "stack", "module"
		}
		text := f.Message
		if f.Kind != rules.CannotEvaluate {
			text += " Remediation: " + remediation[f.Policy]
		}
		results = append(results, sarifResult{
			RuleID: f.Policy, RuleIndex: index[f.Policy], Level: sarifLevel(f.Level),
			Message:    sarifText{text},
			Locations:  []sarifLocation{{LogicalLocations: []sarifLogicalLocation{{Name: name, FullyQualifiedName: name, Kind: kind}}}},
			Properties: map[string]any{"findingKind": string(f.Kind), "resourceType": f.ResourceType},
		})
	}
	log := sarifLog{Schema: SARIFSchema, Version: "2.1.0", Runs: []sarifRun{{Tool: sarifTool{driver}, Results: results}}}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(log)
}
