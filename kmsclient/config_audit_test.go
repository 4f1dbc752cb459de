package kmsclient

import (
	"strings"
	"testing"
	"time"

	"github.com/encvol/encvol/kms"
)

func TestConfigAuditSettings(t *testing.T) {
	for _, tt := range []struct {
		cfg     Config
		wantErr string // substring naming the offending key; "" = valid
		want    kms.Options
	}{
		{Config{Type: "local", Path: "/x"}, "", kms.Options{}},
		{Config{Type: "local", Path: "/x", AuditMaxSize: "16MiB", AuditKeep: -1, AuditSummaryInterval: "10m"}, "",
			kms.Options{AuditMaxSize: 16 << 20, AuditKeep: -1, KeyCheckSummaryInterval: 10 * time.Minute}},
		{Config{Type: "local", Path: "/x", AuditMaxSize: "4096"}, "", kms.Options{AuditMaxSize: 4096}},
		{Config{Type: "local", Path: "/x", AuditMaxSize: "64MB"}, "audit_max_size", kms.Options{}},
		{Config{Type: "local", Path: "/x", AuditMaxSize: "512"}, "audit_max_size", kms.Options{}},
		{Config{Type: "local", Path: "/x", AuditKeep: -2}, "audit_keep", kms.Options{}},
		{Config{Type: "local", Path: "/x", AuditSummaryInterval: "hourly"}, "audit_summary_interval", kms.Options{}},
		{Config{Type: "local", Path: "/x", AuditSummaryInterval: "-1h"}, "audit_summary_interval", kms.Options{}},
		{Config{Type: "aws", Region: "r", AuditKeep: 3}, "audit_keep", kms.Options{}},
		{Config{Type: "aws", Region: "r", AuditMaxSize: "1MiB"}, "audit_max_size", kms.Options{}},
	} {
		err := tt.cfg.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", tt.cfg, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%+v: error %v, want one naming %q", tt.cfg, err, tt.wantErr)
		case tt.wantErr == "":
			opt, _ := tt.cfg.storeOptions()
			if opt.AuditMaxSize != tt.want.AuditMaxSize || opt.AuditKeep != tt.want.AuditKeep ||
				opt.KeyCheckSummaryInterval != tt.want.KeyCheckSummaryInterval {
				t.Errorf("%+v: store options %+v, want %+v", tt.cfg, opt, tt.want)
			}
		}
	}
}
