package main

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
