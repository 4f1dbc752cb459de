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
  encvol --config /etc/encvol/encvol.toml create data

  # a new volume (its own volume ID) from a snapshot, under the snapshot's key
  encvol create --backing /srv/enc/test --from-snapshot /srv/enc/data.snapshots/nightly`,

	"mount": `  # mount in the background; returns once the mount answers
  encvol mount /srv/enc/data /mnt/data

  # a [volumes.data] table of the configuration, in the foreground (Ctrl-C unmounts)
  encvol mount data -f

  # read-only, blocking I/O instead of failing while the key is revoked
  encvol mount /srv/enc/data /mnt/data -o ro,on_revoke=hang

  # a snapshot: always read-only, beside the volume's own mount
  encvol mount /srv/enc/data.snapshots/nightly /mnt/snap

  # through mount(8) and /etc/fstab (needs /sbin/mount.fuse.encvol, see README)
  mount -t fuse.encvol /srv/enc/data /mnt/data -o config=/etc/encvol/encvol.toml
  # /etc/fstab: /srv/enc/data /mnt/data fuse.encvol config=/etc/encvol/encvol.toml,nofail,_netdev 0 0`,

	"snapshot": `  # take, list, mount read-only, restore and delete snapshots of a volume
  encvol snapshot create /srv/enc/data --name before-upgrade
  encvol snapshot list /srv/enc/data
  encvol mount /srv/enc/data.snapshots/before-upgrade /mnt/snap
  encvol snapshot restore /srv/enc/data before-upgrade
  encvol snapshot delete /srv/enc/data before-upgrade`,

	"snapshot create": `  # a snapshot of a mounted volume: writes pause only for the last pass
  encvol snapshot create /srv/enc/data --name nightly-2026-01-02

  # by [volumes.data], as JSON: id, path, method (reflink|copy), paused_ms
  encvol snapshot create data --json`,

	"snapshot list": `  encvol snapshot list /srv/enc/data
  encvol snapshot list data --json`,

	"snapshot delete": `  # by name in the volume's snapshot directory, or by path
  encvol snapshot delete /srv/enc/data nightly-2026-01-02
  encvol snapshot delete data /srv/enc/data.snapshots/nightly-2026-01-02`,

	"snapshot restore": `  # the volume must be unmounted
  encvol umount /mnt/data
  encvol snapshot restore /srv/enc/data before-upgrade
  encvol mount /srv/enc/data /mnt/data`,

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

	"fsck": `  # check an unmounted volume: every sector, name and attribute (exit 0: clean)
  encvol fsck /srv/enc/data

  # move what cannot be read into lost+found, remove leftovers, report each action
  encvol fsck data --repair

  # the findings, actions and throughput as JSON; 4 means errors were left
  encvol fsck /srv/enc/data --json > fsck.json || [ $? -eq 4 ]`,

	"verify": `  # canary and randomness checks through the running mount (or a temporary one)
  encvol verify /srv/enc/data

  # also disable the key for a moment and measure how fast I/O stops and resumes
  encvol verify data --drill --json

  # a snapshot: read back through a read-only mount, searched for its own plaintext
  encvol verify /srv/enc/data.snapshots/nightly`,

	"trust": `  # a mount was refused because the header changed, and you changed it yourself
  encvol trust /srv/enc/data
  encvol trust data`,

	"rekey": `  # move a volume to another key in the same KMS (mounted or not): seconds at any size
  encvol rekey /srv/enc/data --key alias/data-2027

  # to a key of another configured KMS, then retire the old key
  encvol rekey data --key alias/data --kms corp
  encvol kms disable-key alias/data-2026

  # a fresh header backup: an old one opens the volume with the old key
  encvol header backup data /root/data.header`,

	"header": `  encvol header backup /srv/enc/data /root/data.header
  encvol header restore /srv/enc/data /root/data.header`,

	"header backup": `  # after create and after every rekey; the file holds no plaintext key
  encvol header backup /srv/enc/data /root/data.header
  encvol header backup data /mnt/usb/data.header --json`,

	"header restore": `  # the header was destroyed: mounting fails until it is restored
  encvol header restore /srv/enc/data /root/data.header
  encvol mount /srv/enc/data /mnt/data`,

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

  # refused (exit 7) while the key protects volumes: look, then insist
  encvol kms key-usage alias/data
  encvol kms disable-key alias/data --force

  # undo
  encvol kms enable-key alias/data`,

	"kms rotate-key": `  encvol kms rotate-key alias/data`,

	"kms schedule-key-deletion": `  encvol kms schedule-key-deletion alias/data --days 30

  # refused (exit 7) while volumes use the key: move them first, or insist
  encvol rekey data --key alias/data-2027
  encvol kms schedule-key-deletion alias/data --days 30 --force

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

	"kms key-usage": `  # the volumes disable-key and schedule-key-deletion would refuse to cut off
  encvol kms key-usage alias/data
  encvol kms key-usage alias/data --kms corp --json`,

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
    --tls-cert /etc/encvol/kms.pem --tls-key /etc/encvol/kms-key.pem

  # HTTPS with a CA of its own: clients name /etc/encvol/kms-tls/ca.pem as ca_file
  encvol kms serve --listen 0.0.0.0:8400 --store /var/lib/encvol/kms --principals /etc/encvol/principals.toml \
    --tls-self-signed /etc/encvol/kms-tls --tls-host kms.example.internal

  # after editing the principals file by hand (it is also watched)
  kill -HUP "$(pgrep -f 'encvol kms serve')"

  # ARNs of region eu-west-2 and account 210987654321, as Terraform's AWS provider expects
  encvol kms serve --listen 127.0.0.1:8400 --store /var/lib/encvol/kms --principals /etc/encvol/principals.toml \
    --region eu-west-2 --account-id 210987654321`,

	"share": `  # bob (a principal of the KMS server) may mount this volume, and no other under its key
  encvol share /srv/enc/data --with bob

  # a snapshot, read-only, for every member of the [[group]] "auditors" of the principals file
  encvol snapshot create data --name q3 --json
  encvol share /srv/enc/data.snapshots/q3 --with group:auditors --read-only

  # bob's side: his own [kms.team] (type "aws", endpoint, ca_file, his access key), a copy of the snapshot
  rsync -a alice@host:/srv/enc/data.snapshots/q3/ /srv/shared/q3/
  encvol --config /etc/encvol/bob.toml mount /srv/shared/q3 /mnt/q3`,

	"unshare": `  # bob's mounts refuse I/O within their key_check_interval; the owner's go on
  encvol unshare /srv/enc/data --with bob
  encvol unshare data --with group:auditors --json`,

	"shares": `  encvol shares /srv/enc/data
  encvol shares data --json`,

	"kms principal": `  encvol kms principal add bob --principals /etc/encvol/principals.toml
  encvol kms principal list --principals /etc/encvol/principals.toml
  encvol kms principal remove bob --principals /etc/encvol/principals.toml`,

	"kms principal add": `  # prints the new access key once; the running server accepts it within a second
  encvol kms principal add bob --principals /etc/encvol/principals.toml

  # for scripts
  encvol kms principal add bob --principals /etc/encvol/principals.toml --json

  # straight into an AWS credentials file (name it as credentials_file, profile = "bob")
  encvol kms principal add bob --principals /etc/encvol/principals.toml --credentials-file /etc/encvol/bob.credentials`,

	"kms principal list": `  encvol kms principal list --principals /etc/encvol/principals.toml
  encvol kms principal list --principals /etc/encvol/principals.toml --json`,

	"kms principal remove": `  # refused by the running server from its next request on
  encvol kms principal remove bob --principals /etc/encvol/principals.toml`,

	"kms principal rotate-secret": `  encvol kms principal rotate-secret bob --principals /etc/encvol/principals.toml --json`,

	"kms group": `  encvol kms group set auditors --members bob,carol --principals /etc/encvol/principals.toml
  encvol share /srv/enc/data --with group:auditors --read-only`,

	"kms group set": `  # create the group, or replace its members; grants to group:auditors follow at once
  encvol kms group set auditors --members bob,carol --principals /etc/encvol/principals.toml`,

	"kms group remove": `  encvol kms group remove auditors --principals /etc/encvol/principals.toml`,

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
