package backup

import (
	"encoding/json"
	"fmt"
	"time"
)

// Stanza is the part of one element of `pgbackrest info --output=json`
// (pgBackRest 2.45) that the scheduler and the status check read.
type Stanza struct {
	Name   string `json:"name"`
	Status struct {
		// Code is 0 ok, 1 missing stanza path, 2 no valid backups, 3
		// missing stanza data, 4 different cipher, 5 database mismatch, 6
		// backup/expire running, 99 other. `info` exits 0 for all of them.
		Code    int    `json:"code"`
		Message string `json:"message"`
		Lock    struct {
			Backup struct {
				Held bool `json:"held"`
			} `json:"backup"`
		} `json:"lock"`
	} `json:"status"`
	DB []struct {
		// SystemID is above 2^53: decoding it into a float64 rounds it.
		SystemID uint64 `json:"system-id"`
		Version  string `json:"version"`
	} `json:"db"`
	Archive []struct {
		ID  string  `json:"id"`  // "15-1": PostgreSQL version and db history id
		Min *string `json:"min"` // null until a WAL segment is archived
		Max *string `json:"max"`
	} `json:"archive"`
	// Backup lists the backups oldest first.
	Backup []BackupInfo `json:"backup"`
}

// BackupInfo is one backup set in the repository.
type BackupInfo struct {
	Label     string `json:"label"`
	Type      Type   `json:"type"`
	Error     bool   `json:"error"` // a page checksum error was found while copying
	Timestamp struct {
		Start int64 `json:"start"` // unix seconds
		Stop  int64 `json:"stop"`
	} `json:"timestamp"`
	Archive struct {
		Start string `json:"start"`
		Stop  string `json:"stop"` // the last WAL segment a restore of this backup needs
	} `json:"archive"`
	Info struct {
		Size       int64 `json:"size"` // bytes of the database
		Repository struct {
			Size int64 `json:"size"` // bytes stored in the repository (compressed)
		} `json:"repository"`
	} `json:"info"`
}

// Stop is when the backup finished: a restore of it can reach any point
// from here on.
func (b BackupInfo) Stop() time.Time { return time.Unix(b.Timestamp.Stop, 0).UTC() }

// ParseInfo decodes `pgbackrest info --output=json`.
func ParseInfo(data []byte) ([]Stanza, error) {
	var stanzas []Stanza
	if err := json.Unmarshal(data, &stanzas); err != nil {
		return nil, fmt.Errorf("backup: decoding pgbackrest info: %w", err)
	}
	return stanzas, nil
}

// find returns the stanza named name, or the only one when name is empty.
func find(stanzas []Stanza, name string) (Stanza, error) {
	for _, s := range stanzas {
		if name == "" && len(stanzas) == 1 || s.Name == name {
			return s, nil
		}
	}
	if name == "" && len(stanzas) > 1 {
		return Stanza{}, fmt.Errorf("backup: pgbackrest info lists %d stanzas: name one", len(stanzas))
	}
	return Stanza{}, fmt.Errorf("%w %q", errNoStanza, name)
}

// latest returns the newest backup without errors whose type is one of
// types (any type when none is given).
func (s Stanza) latest(types ...Type) (BackupInfo, bool) {
	for i := len(s.Backup) - 1; i >= 0; i-- {
		b := s.Backup[i]
		if b.Error {
			continue
		}
		if len(types) == 0 {
			return b, true
		}
		for _, t := range types {
			if b.Type == t {
				return b, true
			}
		}
	}
	return BackupInfo{}, false
}

// repoFile is one entry of `pgbackrest repo-ls --output=json`.
type repoFile struct {
	Type string `json:"type"`
	Size int64  `json:"size"`
	Time int64  `json:"time"` // unix seconds
}

func parseRepoList(data []byte) (map[string]repoFile, error) {
	var files map[string]repoFile
	if err := json.Unmarshal(data, &files); err != nil {
		return nil, fmt.Errorf("backup: decoding pgbackrest repo-ls: %w", err)
	}
	return files, nil
}
