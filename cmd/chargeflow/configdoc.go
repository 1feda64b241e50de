package main

import (
	"fmt"
	"io"
	"strings"
)

// settingDefault is the configuration table's default of env ("" when it has
// none or env is not in the table).
func settingDefault(env string) string {
	for _, s := range settings {
		if s.env == env {
			return s.def
		}
	}
	return ""
}

// requiredSettings are the settings serve refuses to start without when not
// in --dev, found by asking loadConfig itself: once with nothing set, once
// with only a Huifu base URL (which makes the Huifu identities required).
func requiredSettings() map[string]bool {
	req := map[string]bool{}
	for _, env := range []map[string]string{{}, {"CHARGEFLOW_HUIFU_BASE_URL": "https://huifu.example"}} {
		_, err := loadConfig(nil, func(k string) string { return env[k] }, io.Discard)
		if err == nil {
			continue
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && knownSetting(name) && strings.Contains(line, "required") {
				req[name] = true
			}
		}
	}
	return req
}

// Markers around the generated configuration reference in docs/deploy.md.
const (
	configRefBegin = "<!-- configuration reference: generated from cmd/chargeflow/config.go, do not edit -->"
	configRefEnd   = "<!-- end of the configuration reference -->"
)

// mdEscape keeps a help text literal inside a Markdown table cell.
var mdEscape = strings.NewReplacer("|", "\\|", "<", "&lt;", ">", "&gt;")

// configReference renders the configuration table as the Markdown table of
// docs/deploy.md's configuration reference, markers included.
func configReference() string {
	req := requiredSettings()
	var b strings.Builder
	b.WriteString(configRefBegin + "\n\n")
	b.WriteString("| Variable | Flag | Default | Without `--dev` | What it is |\n|---|---|---|---|---|\n")
	for _, s := range settings {
		def := "—"
		if s.def != "" {
			def = "`" + s.def + "`"
		}
		var notes []string
		if req[s.env] {
			notes = append(notes, "required")
		}
		if s.secret {
			notes = append(notes, "secret: also `"+s.env+"_FILE`")
		}
		fmt.Fprintf(&b, "| `%s` | `--%s` | %s | %s | %s |\n", s.env, flagName(s.env), def, strings.Join(notes, "; "), mdEscape.Replace(s.help))
	}
	b.WriteString("\n" + configRefEnd + "\n")
	return b.String()
}
