package volume

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseEncvolMounts(t *testing.T) {
	table := strings.Join([]string{
		`22 1 0:21 / /proc rw,nosuid - proc proc rw`,
		`40 22 0:50 / /srv/a\040b rw,nosuid,nodev shared:9 - fuse.encvol /data/back\040ing rw,user_id=0,group_id=0,default_permissions`,
		`41 22 0:51 / /home/u/m rw,nosuid,nodev - fuse.encvol /home/u/b rw,user_id=1000,group_id=1000,default_permissions`,
		`42 22 0:52 / /mnt/g rw - fuse.gocryptfs /x rw,user_id=0,group_id=0`,
		`garbage`,
		`43 22 0:53 / /short rw -`,
	}, "\n")
	parse := func(euid int) []MountEntry {
		var got []MountEntry
		if err := readMountinfo(strings.NewReader(table), encvolMountsInto(&got, euid)); err != nil {
			t.Fatal(err)
		}
		return got
	}
	all := []MountEntry{{"/srv/a b", "/data/back ing"}, {"/home/u/m", "/home/u/b"}}
	if got := parse(0); !reflect.DeepEqual(got, all) {
		t.Errorf("root sees %v, want %v", got, all)
	}
	if got, want := parse(1000), all[1:]; !reflect.DeepEqual(got, want) {
		t.Errorf("user 1000 sees %v, want %v", got, want)
	}
	if got := parse(1001); len(got) != 0 {
		t.Errorf("user 1001 sees %v, want nothing", got)
	}
}

func TestMountTypeTopmost(t *testing.T) {
	table := strings.Join([]string{
		`22 1 0:21 / /proc rw,nosuid - proc proc rw`,
		`50 22 0:60 / /mnt/x rw - tmpfs tmpfs rw`,
		`51 50 0:61 / /mnt/x rw,nosuid,nodev - fuse.encvol /b rw,user_id=0,group_id=0`,
		`52 22 0:62 / /mnt/y rw,nosuid,nodev - fuse.encvol /c rw,user_id=0,group_id=0`,
		`53 52 0:63 / /mnt/y rw - tmpfs tmpfs rw`,
		`54 22 0:64 / /mnt/a\040b rw shared:3 - ext4 /dev/sda1 rw`,
		`55 22 0:65 / /mnt/short rw -`,
	}, "\n")
	for path, want := range map[string]string{
		"/mnt/x": FSType, "/mnt/y": "tmpfs", "/mnt/a b": "ext4", "/mnt/short": "", "/mnt": "", "/proc": "proc",
	} {
		got := ""
		if err := readMountinfo(strings.NewReader(table), mountTypeInto(path, &got)); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("MountType(%q) = %q, want %q", path, got, want)
		}
	}
}
