package redisstore

// Key names for the tests that play a crash between steps.
func (s *Store) DueKey() string                       { return s.dueKey() }
func (s *Store) GoneKey() string                      { return s.goneKey() }
func (s *Store) ConnKey(charger string, n int) string { return s.connKey(charger, n) }
func (s *Store) ListKey(kind, value string) string    { return s.listKey(kind, value) }
func (s *Store) OONKey(no string) string              { return s.oonKey(no) }
func Member(session, task string) string              { return member(session, task) }
