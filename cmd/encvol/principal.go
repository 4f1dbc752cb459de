package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/encvol/encvol/kms/server"
	"github.com/encvol/encvol/kmsclient"
)

// The principals file editors: no configuration and no KMS call, only the
// file `encvol kms serve --principals` reads (and reloads while it runs).

const principalsFlagHelp = "principals file of encvol kms serve (created by the first add)"

func requirePrincipals(path string) error {
	if path == "" {
		return usageError("--principals FILE is required: the principals file that encvol kms serve --principals reads")
	}
	return nil
}

func newKMSPrincipalCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "principal",
		Short: "Add, list, remove principals of encvol kms serve, or give them new secrets",
		Long: `Edit the principals file of encvol kms serve: the identities (access key
pairs) the server accepts. The file is rewritten atomically with mode 0600,
and a running server picks up the change within a second (it watches the
file, and reloads at once on SIGHUP); a removed principal is refused from
its next request. Comments in the file are not kept.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(principalAddCommand(a), principalListCommand(a), principalRemoveCommand(a), principalRotateCommand(a))
	return cmd
}

// newKeyOutput is what add and rotate-secret print with --json.
type newKeyOutput struct {
	Name            string `json:"name"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	CredentialsFile string `json:"credentials_file,omitempty"`
	Profile         string `json:"profile,omitempty"`
}

// keyOutputFlags are the output flags of add and rotate-secret.
type keyOutputFlags struct {
	asJSON          bool
	credentialsFile string
	profile         string
}

func (o *keyOutputFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.asJSON, "json", false, `print {"name","access_key_id","secret_access_key"} as JSON`)
	cmd.Flags().StringVar(&o.credentialsFile, "credentials-file", "", "write the key as a profile of this AWS shared credentials file (0600) instead of printing the secret")
	cmd.Flags().StringVar(&o.profile, "profile", "", "profile name in --credentials-file (default: the principal's name)")
}

// emit shows a new access key once: printed, or written to a credentials
// file (then only its place is printed).
func (o *keyOutputFlags) emit(a *app, verb string, p server.Principal) error {
	out := newKeyOutput{Name: p.Name, AccessKeyID: p.AccessKeyID}
	if o.credentialsFile != "" {
		out.CredentialsFile, out.Profile = o.credentialsFile, cmp.Or(o.profile, p.Name)
		if err := kmsclient.WriteCredentialsProfile(o.credentialsFile, out.Profile, p.AccessKeyID, p.SecretAccessKey); err != nil {
			return fmt.Errorf("the principals file has the new key of %s, but writing it to %s failed (run rotate-secret to get another): %w", p.Name, o.credentialsFile, err)
		}
	} else {
		out.SecretAccessKey = p.SecretAccessKey
	}
	if o.asJSON {
		return printJSON(a.stdout, out)
	}
	if out.CredentialsFile != "" {
		fmt.Fprintf(a.stdout, "%s %s: access key %s, written as profile [%s] of %s\n", verb, p.Name, p.AccessKeyID, out.Profile, out.CredentialsFile)
		fmt.Fprintf(a.stdout, "its [kms.NAME]: type = \"aws\", endpoint, region, ca_file, profile = %q, credentials_file = %q\n", out.Profile, out.CredentialsFile)
		return nil
	}
	fmt.Fprintf(a.stdout, "%s %s; the secret is shown only now, put it into %s's [kms.NAME] table:\n", verb, p.Name, p.Name)
	fmt.Fprintf(a.stdout, "access_key_id = %q\nsecret_access_key = %q\n", p.AccessKeyID, p.SecretAccessKey)
	return nil
}

func principalAddCommand(a *app) *cobra.Command {
	var path string
	var o keyOutputFlags
	cmd := &cobra.Command{
		Use:   "add NAME --principals FILE [--json] [--credentials-file F [--profile P]]",
		Short: "Add a principal with a new access key, shown once",
		Long: `Add principal NAME with a new access key (an AKIA... ID and a 40-character
secret) to the principals file, creating the file if needed. The secret is
printed once (or written as an AWS credentials profile with
--credentials-file) and kept only in the principals file. The name "local"
is refused: it administers every key of the store.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requirePrincipals(path); err != nil {
				return err
			}
			p, err := server.AddPrincipal(path, args[0])
			if err != nil {
				return err
			}
			return o.emit(a, "added principal", p)
		},
	}
	cmd.Flags().StringVar(&path, "principals", "", principalsFlagHelp)
	o.register(cmd)
	return cmd
}

func principalRotateCommand(a *app) *cobra.Command {
	var path string
	var o keyOutputFlags
	cmd := &cobra.Command{
		Use:   "rotate-secret NAME --principals FILE [--json] [--credentials-file F [--profile P]]",
		Short: "Give a principal a new secret access key, shown once",
		Long: `Replace the secret access key of principal NAME (its access key ID stays).
Once the running server has reloaded the file (within a second) the old
secret is refused: update the principal's configuration at the same time.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requirePrincipals(path); err != nil {
				return err
			}
			p, err := server.RotateSecret(path, args[0])
			if err != nil {
				return err
			}
			return o.emit(a, "new secret for", p)
		},
	}
	cmd.Flags().StringVar(&path, "principals", "", principalsFlagHelp)
	o.register(cmd)
	return cmd
}

func principalRemoveCommand(a *app) *cobra.Command {
	var path string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "remove NAME --principals FILE [--json]",
		Short: "Remove a principal: the running server refuses it from its next request",
		Long: `Remove principal NAME from the principals file and from every group in it.
The running server refuses NAME's requests once it has reloaded the file
(within a second), so NAME's mounts close their gate at their next key
check. Grants to NAME stay on the keys: a principal added later under the
same name would have them again, so revoke them (encvol unshare, encvol kms
revoke-grant) when the name may come back.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requirePrincipals(path); err != nil {
				return err
			}
			groups, err := server.RemovePrincipal(path, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, map[string]any{"removed": args[0], "groups": append([]string{}, groups...)})
			}
			fmt.Fprintf(a.stdout, "removed principal %s", args[0])
			if len(groups) > 0 {
				fmt.Fprintf(a.stdout, " (and from group %s)", strings.Join(groups, ", "))
			}
			fmt.Fprintf(a.stdout, "; grants to %s stay on the keys until revoked\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "principals", "", "principals file of encvol kms serve")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// principalRow is one principal as list shows it (never its secret).
type principalRow struct {
	Name        string   `json:"name"`
	AccessKeyID string   `json:"access_key_id"`
	Groups      []string `json:"groups"`
}

func principalListCommand(a *app) *cobra.Command {
	var path string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list --principals FILE [--json]",
		Short: "List the principals and groups of a principals file (no secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requirePrincipals(path); err != nil {
				return err
			}
			p, err := server.LoadPrincipalsFile(path)
			if err != nil {
				return withCode(exitUsage, err)
			}
			rows := make([]principalRow, 0, len(p.Principal))
			for _, pr := range p.Principal {
				row := principalRow{Name: pr.Name, AccessKeyID: pr.AccessKeyID, Groups: []string{}}
				for _, g := range p.Group {
					if slices.Contains(g.Members, pr.Name) {
						row.Groups = append(row.Groups, g.Name)
					}
				}
				rows = append(rows, row)
			}
			if asJSON {
				return printJSON(a.stdout, map[string]any{"principals": rows, "groups": groupRows(p)})
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tACCESS KEY ID\tGROUPS")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.AccessKeyID, strings.Join(r.Groups, ","))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&path, "principals", "", "principals file of encvol kms serve")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the principals and groups as JSON")
	return cmd
}

func groupRows(p *server.Principals) []server.Group {
	out := make([]server.Group, 0, len(p.Group))
	for _, g := range p.Group {
		if g.Members == nil {
			g.Members = []string{}
		}
		out = append(out, g)
	}
	return out
}

func newKMSGroupCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group",
		Short: "Define groups of principals of encvol kms serve (share --with group:NAME)",
		Long: `Edit the [[group]] tables of the principals file. A grant to group:NAME
(encvol share VOLUME --with group:NAME) admits every member as the group is
at each request: a member added later gains access, one taken out loses it
at its next request, without touching the grants.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var path string
	var members []string
	set := &cobra.Command{
		Use:   "set NAME --members P1,P2,... --principals FILE",
		Short: "Create a group, or replace its members",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requirePrincipals(path); err != nil {
				return err
			}
			if err := server.SetGroup(path, args[0], members); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "group %s: %s\n", args[0], strings.Join(members, ", "))
			return nil
		},
	}
	set.Flags().StringVar(&path, "principals", "", "principals file of encvol kms serve")
	set.Flags().StringSliceVar(&members, "members", nil, "comma-separated principal names (none: an empty group)")
	var rmPath string
	remove := &cobra.Command{
		Use:   "remove NAME --principals FILE",
		Short: "Remove a group: its grants then admit nobody",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requirePrincipals(rmPath); err != nil {
				return err
			}
			if err := server.RemoveGroup(rmPath, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "removed group %s; grants to group:%s stay on the keys and admit nobody until a group of that name exists again\n", args[0], args[0])
			return nil
		},
	}
	remove.Flags().StringVar(&rmPath, "principals", "", "principals file of encvol kms serve")
	cmd.AddCommand(set, remove)
	return cmd
}
