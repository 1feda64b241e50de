package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"

	"github.com/chargeflow/chargeflow/internal/testenv"
)

// The tests of this file keep deploy/ and the Dockerfile true
// (docs/deploy.md): the settings they give exist and are enough to start
// without --dev, the secrets they name are mounted, every YAML file parses,
// and each deployment's pieces name each other rightly.

const deployDir = "../../deploy"

// deployment is what one deploy recipe gives a `chargeflow serve` process:
// its environment, and the paths at which it has secret files (where a
// *_FILE setting may point).
type deployment struct {
	name    string
	env     map[string]string
	secrets map[string]bool
}

// TestDeployNames: every CHARGEFLOW_* name in deploy/ and the Dockerfile is
// a setting of the configuration table, or <secret setting>_FILE, or a
// family (CHARGEFLOW_HUIFU_*) some settings belong to.
func TestDeployNames(t *testing.T) {
	name := regexp.MustCompile(`CHARGEFLOW_[A-Z0-9_]*[A-Z0-9](_\*)?`)
	files := append(deployFiles(t), "../../Dockerfile")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range slices.Compact(sortedCopy(name.FindAllString(string(b), -1))) {
			if err := checkSettingName(n); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
	}
}

func checkSettingName(n string) error {
	if knownSetting(n) {
		return nil
	}
	if family, ok := strings.CutSuffix(n, "*"); ok { // CHARGEFLOW_HUIFU_*: a family of settings
		for _, s := range settings {
			if strings.HasPrefix(s.env, family) {
				return nil
			}
		}
		return fmt.Errorf("no setting of the configuration table starts with %s", family)
	}
	if base, ok := strings.CutSuffix(n, "_FILE"); ok && knownSetting(base) {
		for _, s := range settings {
			if s.env == base && !s.secret {
				return fmt.Errorf("%s: %s is not a secret setting, so it has no _FILE form", n, base)
			}
		}
		return nil
	}
	return fmt.Errorf("%s is not in the configuration table (cmd/chargeflow/config.go)", n)
}

// TestDeployYAML: every YAML file under deploy/ parses, every document of it.
func TestDeployYAML(t *testing.T) {
	n := 0
	for _, f := range deployFiles(t) {
		if ext := filepath.Ext(f); ext != ".yaml" && ext != ".yml" {
			continue
		}
		n++
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := yamlDocs(b)
		if err != nil {
			t.Errorf("%s: %v", f, err)
		} else if len(docs) == 0 {
			t.Errorf("%s: no YAML document", f)
		}
	}
	if n < 10 {
		t.Fatalf("only %d YAML files under deploy/", n)
	}
}

// TestDeployConfig: each deployment (both compose instances, the Kubernetes
// pods, the systemd unit) sets only real settings, points every *_FILE at a
// secret it mounts, and gives everything `serve` needs without --dev: the
// configuration loads with no problem.
func TestDeployConfig(t *testing.T) {
	deps := append(composeDeployments(t), k8sDeployment(t), systemdDeployment(t))
	for _, d := range deps {
		t.Run(d.name, func(t *testing.T) { checkDeployment(t, d) })
	}
}

// secretSample is a plausible content of each secret setting's file.
var secretSample = map[string]string{
	"CHARGEFLOW_REDIS_URL":       "redis://:password@redis:6379/0",
	"CHARGEFLOW_APP_TOKENS":      "miniprogram:app-token-0123",
	"CHARGEFLOW_OPERATOR_TOKENS": "ops:operator-token-0123",
}

func checkDeployment(t *testing.T, d deployment) {
	files := map[string]string{}
	dir := t.TempDir()
	for k, v := range d.env {
		if err := checkSettingName(k); err != nil {
			t.Errorf("%s: %v", d.name, err)
		}
		base, isFile := strings.CutSuffix(k, "_FILE")
		if !isFile || !knownSetting(base) {
			// Any other path into a secrets mount must be mounted too
			// (the systemd unit's TLS certificate and key).
			if (strings.HasPrefix(v, "/run/secrets/") || strings.HasPrefix(v, "/run/credentials/")) && !d.secrets[v] {
				t.Errorf("%s: %s=%s, but no secret is mounted there", d.name, k, v)
			}
			continue
		}
		if !d.secrets[v] {
			t.Errorf("%s: %s=%s, but no secret is mounted there (mounted: %v)", d.name, k, v, sortedKeys(d.secrets))
		}
		sample, ok := secretSample[base]
		if !ok {
			sample = "secret-value"
		}
		p := filepath.Join(dir, base)
		if err := os.WriteFile(p, []byte(sample+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		files[k] = p
	}
	// Certificate files are read while the configuration loads: the
	// deployment's paths stand for a pair made here.
	if d.env["CHARGEFLOW_MQTT_TLS_CERT"] != "" || d.env["CHARGEFLOW_MQTT_CA_FILE"] != "" {
		ca := testenv.NewCA(t, "deploy test CA")
		sc := ca.IssueServer(t, "", "broker")
		files["CHARGEFLOW_MQTT_TLS_CERT"], files["CHARGEFLOW_MQTT_TLS_KEY"], files["CHARGEFLOW_MQTT_CA_FILE"] = sc.CertFile, sc.KeyFile, ca.CertFile
	}
	getenv := func(k string) string {
		if p, ok := files[k]; ok && d.env[k] != "" {
			return p
		}
		return d.env[k]
	}
	var stderr bytes.Buffer
	if _, err := loadConfig(nil, getenv, &stderr); err != nil {
		t.Errorf("%s does not start without --dev: %v", d.name, err)
	}
}

// composeDeployments reads deploy/compose: one deployment per service that
// runs `serve`, and the checks that tie the services together.
func composeDeployments(t *testing.T) []deployment {
	dir := filepath.Join(deployDir, "compose")
	var c struct {
		Services map[string]struct {
			Image       string
			Build       any
			Command     []string
			EnvFile     []string `yaml:"env_file"`
			Environment map[string]string
			Secrets     []string
			Volumes     []string
			ReadOnly    bool `yaml:"read_only"`
		}
		Secrets map[string]struct{ File string }
	}
	readYAML(t, filepath.Join(dir, "compose.yaml"), &c)
	image := dockerfileEnv(t)

	var deps []deployment
	groups, ids := map[string]bool{}, map[string]bool{}
	var targets []string
	for name, s := range c.Services {
		for _, sec := range s.Secrets {
			if _, ok := c.Secrets[sec]; !ok {
				t.Errorf("compose: service %s uses secret %s, which is not declared", name, sec)
			}
		}
		if len(s.Command) == 0 || s.Command[0] != "serve" {
			continue
		}
		if !s.ReadOnly {
			t.Errorf("compose: %s: read_only: true, as the image needs no writable root", name)
		}
		d := deployment{name: "compose/" + name, env: map[string]string{}, secrets: map[string]bool{}}
		for k, v := range image {
			d.env[k] = v
		}
		for _, f := range s.EnvFile {
			for k, v := range readEnvFile(t, filepath.Join(dir, f)) {
				d.env[k] = v
			}
		}
		for k, v := range s.Environment {
			d.env[k] = v
		}
		for _, sec := range s.Secrets {
			d.secrets["/run/secrets/"+sec] = true
		}
		groups[d.env["CHARGEFLOW_MQTT_SHARE_GROUP"]] = true
		if ids[d.env["CHARGEFLOW_INSTANCE_ID"]] {
			t.Errorf("compose: two instances with CHARGEFLOW_INSTANCE_ID %q", d.env["CHARGEFLOW_INSTANCE_ID"])
		}
		ids[d.env["CHARGEFLOW_INSTANCE_ID"]] = true
		targets = append(targets, name+":"+portOf(d.env["CHARGEFLOW_HTTP_ADDR"]))
		deps = append(deps, d)
	}
	if len(deps) < 2 || len(groups) != 1 || groups[""] {
		t.Errorf("compose: want two or more chargeflow instances in one CHARGEFLOW_MQTT_SHARE_GROUP, got %d in %v", len(deps), sortedKeys(groups))
	}
	for name, sec := range c.Secrets {
		if !strings.HasPrefix(sec.File, "./secrets/") {
			t.Errorf("compose: secret %s comes from %s, outside ./secrets/ (kept out of git)", name, sec.File)
		}
	}
	if !strings.Contains(strings.Join(c.Services["redis"].Command, " "), "--appendonly yes") {
		t.Errorf("compose: redis runs without AOF: %q", c.Services["redis"].Command)
	}

	// Prometheus scrapes exactly the instances.
	var prom struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct{ Targets []string } `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, filepath.Join(dir, "prometheus.yml"), &prom)
	var scraped []string
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			scraped = append(scraped, st.Targets...)
		}
	}
	if sort.Strings(scraped); !slices.Equal(scraped, sortedCopy(targets)) {
		t.Errorf("compose: prometheus scrapes %v, the instances are %v", scraped, sortedCopy(targets))
	}

	// Mosquitto gets every file its configuration names, and has a TLS listener.
	mounted := map[string]bool{}
	for _, v := range c.Services["mosquitto"].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 {
			mounted[parts[1]] = true
			if src := parts[0]; strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "./secrets/") && !strings.HasPrefix(src, "./certs/") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("compose: mosquitto mounts %s: %v", src, err)
				}
			}
		}
	}
	conf := readText(t, filepath.Join(deployDir, "mosquitto", "mosquitto.conf"))
	tls := false
	for _, line := range strings.Split(conf, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == "password_file" || f[0] == "acl_file" || f[0] == "certfile" || f[0] == "keyfile") && !mounted[f[1]] {
			t.Errorf("compose: mosquitto.conf's %s %s is not mounted", f[0], f[1])
		}
		tls = tls || (len(f) == 2 && f[0] == "certfile")
	}
	if !tls || !strings.Contains(conf, "allow_anonymous false") {
		t.Error("compose: mosquitto.conf needs a TLS listener and allow_anonymous false")
	}

	// Grafana: the dashboard lands where the provisioning looks for it.
	var prov struct {
		Providers []struct{ Options struct{ Path string } }
	}
	readYAML(t, filepath.Join(deployDir, "grafana", "provisioning", "dashboards.yaml"), &prov)
	want := prov.Providers[0].Options.Path + "/chargeflow.json"
	if !slices.ContainsFunc(c.Services["grafana"].Volumes, func(v string) bool {
		return strings.HasPrefix(v, "../grafana/chargeflow.json:"+want+":")
	}) {
		t.Errorf("compose: grafana does not mount the dashboard at %s", want)
	}
	return deps
}

// k8sDeployment reads deploy/k8s: the pods' environment (ConfigMap, env,
// the Secret's mount) and the checks the issue asks of the manifests.
func k8sDeployment(t *testing.T) deployment {
	dir := filepath.Join(deployDir, "k8s")
	objs := map[string]map[string]any{} // kind → object
	for _, f := range []string{"configmap.yaml", "deployment.yaml", "service.yaml", "pdb.yaml", "secret.example.yaml"} {
		docs, err := yamlDocs([]byte(readText(t, filepath.Join(dir, f))))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, d := range docs {
			objs[str(dig(d, "kind"))] = d
		}
	}
	var kust struct{ Resources []string }
	readYAML(t, filepath.Join(dir, "kustomization.yaml"), &kust)
	if want := []string{"configmap.yaml", "deployment.yaml", "pdb.yaml", "service.yaml"}; !slices.Equal(sortedCopy(kust.Resources), want) {
		t.Errorf("k8s: kustomization lists %v, want %v (the Secret is made by hand)", kust.Resources, want)
	}

	dep := objs["Deployment"]
	if n, _ := dig(dep, "spec", "replicas").(int); n < 2 {
		t.Errorf("k8s: %d replicas, want 2 or more", n)
	}
	pod := dig(dep, "spec", "template", "spec")
	podLabels := dig(dep, "spec", "template", "metadata", "labels")
	for _, o := range []struct{ kind, path string }{{"Service", "spec.selector"}, {"PodDisruptionBudget", "spec.selector.matchLabels"}, {"Deployment", "spec.selector.matchLabels"}} {
		sel, _ := digs(objs[o.kind], o.path).(map[string]any)
		for k, v := range sel {
			if dig(podLabels, k) != v {
				t.Errorf("k8s: the %s selects %s=%v, which the pods do not carry", o.kind, k, v)
			}
		}
		if len(sel) == 0 {
			t.Errorf("k8s: the %s has no selector", o.kind)
		}
	}
	if dig(pod, "securityContext", "runAsNonRoot") != true {
		t.Error("k8s: pods must runAsNonRoot")
	}
	c := dig(pod, "containers", 0)
	for path, want := range map[string]any{
		"readinessProbe.httpGet.path": "/readyz", "livenessProbe.httpGet.path": "/healthz",
		"securityContext.readOnlyRootFilesystem": true, "securityContext.allowPrivilegeEscalation": false,
	} {
		if got := digs(c, path); got != want {
			t.Errorf("k8s: container %s = %v, want %v", path, got, want)
		}
	}
	for _, r := range []string{"requests.cpu", "requests.memory", "limits.memory"} {
		if digs(c, "resources."+r) == nil {
			t.Errorf("k8s: container resources.%s is not set", r)
		}
	}

	d := deployment{name: "k8s", env: dockerfileEnv(t), secrets: map[string]bool{}}
	cm := objs["ConfigMap"]
	for _, ef := range list(dig(c, "envFrom")) {
		if name := dig(ef, "configMapRef", "name"); name != nil {
			if name != dig(cm, "metadata", "name") {
				t.Errorf("k8s: envFrom names ConfigMap %v, configmap.yaml is %v", name, dig(cm, "metadata", "name"))
			}
			for k, v := range dig(cm, "data").(map[string]any) {
				d.env[k] = str(v)
			}
		}
	}
	for _, e := range list(dig(c, "env")) {
		name := str(dig(e, "name"))
		switch {
		case dig(e, "value") != nil:
			d.env[name] = str(dig(e, "value"))
		case dig(e, "valueFrom", "fieldRef", "fieldPath") == "metadata.name":
			d.env[name] = "chargeflow-7d9f8b6c5-x2x9q"
		default:
			t.Errorf("k8s: env %s has a source this test does not know", name)
		}
	}
	if _, ok := d.env["CHARGEFLOW_INSTANCE_ID"]; !ok || dig(c, "env", 0, "valueFrom", "fieldRef", "fieldPath") != "metadata.name" {
		t.Error("k8s: CHARGEFLOW_INSTANCE_ID must come from the pod name (fieldRef metadata.name)")
	}
	secret := objs["Secret"]
	for _, vm := range list(dig(c, "volumeMounts")) {
		for _, v := range list(dig(pod, "volumes")) {
			if dig(v, "name") != dig(vm, "name") || dig(v, "secret") == nil {
				continue
			}
			if dig(v, "secret", "secretName") != dig(secret, "metadata", "name") {
				t.Errorf("k8s: the pods mount Secret %v, secret.example.yaml is %v", dig(v, "secret", "secretName"), dig(secret, "metadata", "name"))
			}
			for key := range dig(secret, "stringData").(map[string]any) {
				d.secrets[str(dig(vm, "mountPath"))+"/"+key] = true
			}
		}
	}
	return d
}

// systemdDeployment reads deploy/systemd: the unit's Environment= lines (its
// specifiers expanded), its EnvironmentFile (the example), and its
// credentials; and checks the hardening the issue asks for.
func systemdDeployment(t *testing.T) deployment {
	dir := filepath.Join(deployDir, "systemd")
	unit := readText(t, filepath.Join(dir, "chargeflow.service"))
	spec := strings.NewReplacer("%d", "/run/credentials/chargeflow.service", "%S", "/var/lib", "%H", "host1")
	d := deployment{name: "systemd", env: map[string]string{}, secrets: map[string]bool{}}
	directives := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		directives[k] = append(directives[k], v)
	}
	for _, v := range directives["EnvironmentFile"] {
		if v != "/etc/chargeflow/chargeflow.env" {
			t.Errorf("systemd: EnvironmentFile=%s, the example is for /etc/chargeflow/chargeflow.env", v)
		}
		for k, v := range readEnvFile(t, filepath.Join(dir, "chargeflow.env.example")) {
			d.env[k] = v
		}
	}
	for _, v := range directives["Environment"] {
		k, val, _ := strings.Cut(v, "=")
		d.env[k] = spec.Replace(val)
	}
	for _, v := range directives["LoadCredential"] {
		name, _, _ := strings.Cut(v, ":")
		d.secrets[spec.Replace("%d/"+name)] = true
	}
	for k, want := range map[string]string{"DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes", "StateDirectory": "chargeflow"} {
		if got := directives[k]; len(got) != 1 || got[0] != want {
			t.Errorf("systemd: %s=%v, want %s", k, got, want)
		}
	}
	if d.env["CHARGEFLOW_DATA_DIR"] != "/var/lib/chargeflow" {
		t.Errorf("systemd: CHARGEFLOW_DATA_DIR=%s, want the state directory /var/lib/chargeflow", d.env["CHARGEFLOW_DATA_DIR"])
	}
	return d
}

// dockerfileEnv is what the image's ENV lines set.
func dockerfileEnv(t *testing.T) map[string]string {
	env := map[string]string{}
	for _, line := range strings.Split(readText(t, "../../Dockerfile"), "\n") {
		if rest, ok := strings.CutPrefix(line, "ENV "); ok {
			for _, kv := range strings.Fields(rest) {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
		}
	}
	return env
}

// portOf is the port of a listen address (the table's default when empty).
func portOf(addr string) string {
	if addr == "" {
		addr = settingDefault("CHARGEFLOW_HTTP_ADDR")
	}
	return addr[strings.LastIndex(addr, ":")+1:]
}

func deployFiles(t *testing.T) []string {
	var files []string
	err := filepath.WalkDir(deployDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "secrets" || d.Name() == "certs") {
			return filepath.SkipDir // made by the operator, not in git
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func yamlDocs(b []byte) ([]map[string]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	if err := yaml.Unmarshal([]byte(readText(t, path)), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readEnvFile reads NAME=value lines ('#' comments), as compose's env_file
// and systemd's EnvironmentFile both take them.
func readEnvFile(t *testing.T, path string) map[string]string {
	env := map[string]string{}
	for i, line := range strings.Split(readText(t, path), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s:%d: want NAME=value", path, i+1)
			continue
		}
		env[k] = v
	}
	return env
}

// dig walks maps (string keys) and lists (int indexes); nil when absent.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// digs is dig along a dotted path of map keys.
func digs(v any, dotted string) any {
	for _, k := range strings.Split(dotted, ".") {
		v = dig(v, k)
	}
	return v
}

func list(v any) []any { l, _ := v.([]any); return l }

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	return c
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
