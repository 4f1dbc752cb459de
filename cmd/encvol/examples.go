package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples holds the Examples section of every command's --help, keyed by
// the command's path below the root ("" is the root itself). They live in
// one table so that a new command without examples is caught by one test
// (TestEveryCommandHasExamples) and the examples read as one consistent
// tutorial.
var examples = map[string]string{
	"": `  # a key, a volume under it, mounted, shown and unmounted
  encvol kms create-key --alias alias/data
  encvol create --backing /srv/enc/data --key alias/data
  encvol mount /srv/enc/data /mnt/data
  encvol status
  encvol umount /mnt/data`,

	"create": `  # a volume under the service key (alias/encvol/default) of the default KMS
  encvol create --backing /srv/enc/data

  # under a customer key, with 16 KiB sectors, printed as JSON
  encvol create --backing /srv/enc/data --key alias/data --sector-size 16384 --json

  # the [volumes.data] table of the configuration names backing, KMS and key
  encvol --config /etc/encvol/encvol.toml create data`,

	"mount": `  # mount in the background; returns once the mount answers
  encvol mount /srv/enc/data /mnt/data

  # a [volumes.data] table of the configuration, in the foreground (Ctrl-C unmounts)
  encvol mount data -f

  # read-only, blocking I/O instead of failing while the key is revoked
  encvol mount /srv/enc/data /mnt/data -o ro,on_revoke=hang

  # through mount(8) and /etc/fstab (needs /sbin/mount.fuse.encvol, see README)
  mount -t fuse.encvol /srv/enc/data /mnt/data -o config=/etc/encvol/encvol.toml
  # /etc/fstab: /srv/enc/data /mnt/data fuse.encvol config=/etc/encvol/encvol.toml,nofail,_netdev 0 0`,

	"umount": `  encvol umount /mnt/data

  # idempotent in scripts: exit 5 means nothing was mounted there
  encvol umount /mnt/data || [ $? -eq 5 ]`,

	"status": `  # every mounted volume, one line each
  encvol status

  # one mount in detail, or as JSON for scripts
  encvol status /mnt/data
  encvol status /mnt/data --json`,

	"import": `  # convert a plaintext directory into a new volume under a customer key
  encvol import /srv/plain/data --backing /srv/enc/data --key alias/data

  # into the [volumes.data] table's backing directory, key and KMS, as JSON
  encvol import /srv/plain/data data --json

  # finish an import that was killed or ran out of space (rerunning it does too)
  encvol import /srv/plain/data --backing /srv/enc/data --key alias/data --resume

  # every [volumes.NAME] with import_from = "DIR", with a summary table
  encvol --config /etc/encvol/encvol.toml import --all`,

	"copy": `  # copy an unmounted volume into a new one under another key
  encvol copy /srv/enc/data --backing /srv/enc/data-b --key alias/other

  # from a snapshot, into the [volumes.archive] table's backing, KMS and key
  encvol copy /srv/enc/data.snapshots/snap-1 archive --json

  # finish a copy that was killed or ran out of space (rerunning it does too)
  encvol copy /srv/enc/data --backing /srv/enc/data-b --key alias/other --resume`,

	"verify": `  # canary and randomness checks through the running mount (or a temporary one)
  encvol verify /srv/enc/data

  # also disable the key for a moment and measure how fast I/O stops and resumes
  encvol verify data --drill --json`,

	"kms": `  encvol kms create-key --alias alias/data
  encvol kms list-keys
  encvol kms disable-key alias/data
  encvol kms serve --listen 127.0.0.1:8400 --store /var/lib/encvol/kms --principals /etc/encvol/principals.toml`,

	"kms create-key": `  encvol kms create-key --alias alias/data --description "volumes of the data team"

  # on a remote KMS configured as [kms.corp], printed as JSON
  encvol kms create-key --kms corp --alias alias/data --json

  # bring your own key: create it without material, then import 32 random bytes
  encvol kms create-key --alias alias/byok --origin external
  encvol kms import-key-material alias/byok --material key.bin`,

	"kms describe-key": `  encvol kms describe-key alias/data
  encvol kms describe-key 1234abcd-12ab-34cd-56ef-1234567890ab --json`,

	"kms enable-key": `  encvol kms enable-key alias/data`,

	"kms disable-key": `  # mounts under the key refuse I/O within their key_check_interval
  encvol kms disable-key alias/data

  # undo
  encvol kms enable-key alias/data`,

	"kms rotate-key": `  encvol kms rotate-key alias/data`,

	"kms schedule-key-deletion": `  encvol kms schedule-key-deletion alias/data --days 30

  # changed your mind within the window: cancel, then enable
  encvol kms cancel-key-deletion alias/data
  encvol kms enable-key alias/data`,

	"kms cancel-key-deletion": `  encvol kms cancel-key-deletion alias/data
  encvol kms enable-key alias/data`,

	"kms list-keys": `  encvol kms list-keys
  encvol kms list-keys --kms corp --json`,

	"kms audit": `  # the last 20 records of one key
  encvol kms audit --key alias/data --limit 20

  # which volumes used the key, as JSON
  encvol kms audit --key alias/data --volumes --json`,

	"kms create-alias": `  encvol kms create-alias alias/data-2026 1234abcd-12ab-34cd-56ef-1234567890ab`,

	"kms list-aliases": `  encvol kms list-aliases
  encvol kms list-aliases --key alias/data --json`,

	"kms create-grant": `  # let bob (a principal of the KMS server) mount volumes under the key
  encvol kms create-grant alias/data --grantee bob --operations Decrypt,DescribeKey --kms corp`,

	"kms list-grants": `  encvol kms list-grants alias/data --kms corp`,

	"kms revoke-grant": `  # the grantee's mounts stop at their next key check
  encvol kms revoke-grant alias/data 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef --kms corp`,

	"kms import-key-material": `  head -c 32 /dev/urandom > key.bin
  encvol kms create-key --alias alias/byok --origin external
  encvol kms import-key-material alias/byok --material key.bin`,

	"kms serve": `  # write the principals file (see above) and keep it private
  install -m 0600 /dev/null /etc/encvol/principals.toml
  $EDITOR /etc/encvol/principals.toml

  # plain HTTP on loopback
  encvol kms serve --listen 127.0.0.1:8400 --store /var/lib/encvol/kms --principals /etc/encvol/principals.toml

  # HTTPS for other hosts
  encvol kms serve --listen 0.0.0.0:8400 --store /var/lib/encvol/kms --principals /etc/encvol/principals.toml \
    --tls-cert /etc/encvol/kms.pem --tls-key /etc/encvol/kms-key.pem`,

	"help": `  encvol help mount
  encvol help kms create-key`,

	"completion": `  encvol completion bash > /etc/bash_completion.d/encvol`,

	"completion bash": `  encvol completion bash > /etc/bash_completion.d/encvol`,

	"completion zsh": `  encvol completion zsh > "${fpath[1]}/_encvol"`,

	"completion fish": `  encvol completion fish > ~/.config/fish/completions/encvol.fish`,

	"completion powershell": `  encvol completion powershell | Out-String | Invoke-Expression`,
}

// addExamples sets the Example of every command in the tree below root
// from the examples table.
func addExamples(root *cobra.Command) {
	// cobra adds help and completion when the command runs; add them now
	// so that they get their examples too.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if ex, ok := examples[commandKey(c)]; ok {
			c.Example = ex
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// commandKey is the command's path without the root's name.
func commandKey(c *cobra.Command) string {
	return strings.TrimPrefix(strings.TrimPrefix(c.CommandPath(), c.Root().Name()), " ")
}
