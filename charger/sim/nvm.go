package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/chargeflow/chargeflow/charger"
)

// The simulated non-volatile memory on disk (Config.StateDir): one JSON file
// per charger, <StateDir>/<id>.json, replaced atomically (temp file, fsync,
// rename, fsync of the directory) on every change a real charger keeps:
//   - a txn event queued (before it is sent) or acked;
//   - a session started or ended (the same write as its txn event);
//   - the meter register, before each meter sample is sent, so the register
//     the cloud has seen is never ahead of the NVM (an `ended` below the last
//     sample would be a meter anomaly for the cloud);
//   - the boot counter, at each power-up;
//   - a command's answer, before it is sent (the last maxAnswers are kept).
//
// A charger reads its file once, on its first power-up in this process. The
// sessions in it were running when the process died: they end with
// "power_loss" at the saved register and time, as txn events queued while
// offline. A file that cannot be read or decoded is logged (and kept aside as
// <id>.json.corrupt) and the charger starts fresh.

// maxAnswers is how many command answers the NVM file keeps (newest).
const maxAnswers = 64

const nvmVersion = 1

type nvmFile struct {
	Version   int              `json:"version"`
	ChargerID string           `json:"charger_id"`
	SavedAt   time.Time        `json:"saved_at"` // charger clock at the write
	Boots     int64            `json:"boots"`
	Register  map[int]int64    `json:"register"`
	Sessions  []nvmSession     `json:"sessions,omitempty"`
	Pending   []charger.TxnMsg `json:"pending,omitempty"` // creation order
	Answers   []charger.AckMsg `json:"answers,omitempty"` // oldest first
}

type nvmSession struct {
	ID          string `json:"id"`
	Connector   int    `json:"connector"`
	StartWh     int64  `json:"start_wh"`
	MaxEnergyWh int64  `json:"max_energy_wh,omitempty"`
	Seq         int64  `json:"seq"`
}

func (c *Charger) statePath() string { return filepath.Join(c.cfg.StateDir, c.id+".json") }

// saveLocked writes the NVM to the state file (no-op without StateDir). A
// failure is logged (once until a write succeeds again); the charger goes on.
func (c *Charger) saveLocked() {
	if c.cfg.StateDir == "" {
		return
	}
	err := c.writeStateLocked()
	switch {
	case err != nil && !c.saveFailing:
		c.saveFailing = true
		c.log.Error("sim: cannot save non-volatile memory", "path", c.statePath(), "err", err)
	case err == nil && c.saveFailing:
		c.saveFailing = false
		c.log.Info("sim: non-volatile memory saved again", "path", c.statePath())
	}
}

func (c *Charger) writeStateLocked() error {
	f := nvmFile{Version: nvmVersion, ChargerID: c.id, SavedAt: c.nowLocked(), Boots: c.nvm.boots,
		Register: c.nvm.register, Pending: c.nvm.pending}
	for _, id := range slices.Sorted(maps.Keys(c.nvm.sessions)) {
		s := c.nvm.sessions[id]
		f.Sessions = append(f.Sessions, nvmSession{ID: s.ID, Connector: s.Connector, StartWh: s.StartWh,
			MaxEnergyWh: s.MaxEnergyWh, Seq: s.Seq})
	}
	order := c.nvm.answerOrder
	if len(order) > maxAnswers {
		order = order[len(order)-maxAnswers:]
	}
	for _, id := range order {
		f.Answers = append(f.Answers, c.nvm.answers[id])
	}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return writeFileAtomic(c.statePath(), b)
}

// writeFileAtomic replaces path with b: a temp file in the same directory,
// fsync, rename over path, fsync of the directory.
func writeFileAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err = tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil { // best effort: not every OS syncs directories
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// loadLocked reads the state file into the NVM (once per process, at the
// first power-up). Sessions found there end with "power_loss".
func (c *Charger) loadLocked() {
	if c.cfg.StateDir == "" {
		return
	}
	path := c.statePath()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return // a new charger
	}
	var f nvmFile
	if err == nil {
		err = decodeState(b, c.id, &f)
	}
	if err != nil {
		aside := path + ".corrupt"
		if rerr := os.Rename(path, aside); rerr != nil {
			aside = ""
		}
		c.log.Error("sim: non-volatile memory unreadable, starting fresh", "path", path, "kept_as", aside, "err", err)
		return
	}
	c.nvm.boots = f.Boots
	for id, wh := range f.Register {
		if _, ok := c.conns[id]; ok {
			c.nvm.register[id] = wh
		}
	}
	for _, a := range f.Answers {
		if _, ok := c.nvm.answers[a.CmdID]; !ok {
			c.nvm.answerOrder = append(c.nvm.answerOrder, a.CmdID)
		}
		c.nvm.answers[a.CmdID] = a
	}
	c.nvm.pending = slices.Clone(f.Pending)
	// The process died with these sessions running: as after a power cut,
	// they end at the last register and time the NVM holds.
	at := f.SavedAt
	if at.IsZero() {
		at = c.nowLocked()
	}
	for _, s := range f.Sessions {
		wh := max(f.Register[s.Connector], s.StartWh)
		c.nvm.pending = append(c.nvm.pending, charger.TxnMsg{EventID: newID(), SessionID: s.ID, Connector: s.Connector,
			Type: charger.TxnEnded, TS: at.In(beijing), MeterWh: wh, Reason: charger.EndPowerLoss, Offline: true})
	}
	c.log.Info("sim: non-volatile memory loaded", "path", path, "boots", f.Boots, "pending", len(c.nvm.pending),
		"ended_power_loss", len(f.Sessions))
}

func decodeState(b []byte, id string, f *nvmFile) error {
	if err := json.Unmarshal(b, f); err != nil {
		return err
	}
	if f.Version != nvmVersion {
		return fmt.Errorf("version %d, want %d", f.Version, nvmVersion)
	}
	if f.ChargerID != id {
		return fmt.Errorf("file is charger %q's", f.ChargerID)
	}
	for _, e := range f.Pending {
		if e.EventID == "" || e.SessionID == "" {
			return errors.New("txn event without event_id or session_id")
		}
	}
	for _, s := range f.Sessions {
		if s.ID == "" {
			return errors.New("session without id")
		}
	}
	return nil
}
