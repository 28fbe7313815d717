//! Tokens on the command line: which bearer token a client command sends
//! (`--token`, `--token-file`, or the admin token of a local cluster), the
//! admin token `leasehold dev` makes on first start, and `leasehold auth
//! token`, which makes a token and the `token_sha256` line for the servers.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use leasehold_client::TOKEN_BYTES_MAX;
use leasehold_server::auth::new_token;
use leasehold_server::{Role, TokenDigest};

use crate::output::Format;

/// The variable naming the data root of a local cluster (as `cluster/up.sh`
/// and `leasehold server` read it).
pub const DATA_DIR_ENV: &str = "LEASEHOLD_DATA_DIR";
/// The data root of a local cluster when `LEASEHOLD_DATA_DIR` is unset.
pub const DATA_DIR_DEFAULT: &str = ".leasehold-data";
/// The admin token's file name in the data root.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The admin principal's name in a local cluster.
pub const ADMIN_PRINCIPAL: &str = "admin";

/// Where a local cluster keeps its admin token:
/// `$LEASEHOLD_DATA_DIR/admin.token`, else `./.leasehold-data/admin.token`.
pub fn default_token_file() -> PathBuf {
    let root = std::env::var_os(DATA_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DATA_DIR_DEFAULT), PathBuf::from);
    root.join(ADMIN_TOKEN_FILE)
}

/// Reads a token file: its content without surrounding whitespace; at
/// most [`TOKEN_BYTES_MAX`] bytes.
pub fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        anyhow::bail!("the token file {} is empty", path.display());
    }
    if token.len() > TOKEN_BYTES_MAX {
        anyhow::bail!(
            "the token in {} is longer than {TOKEN_BYTES_MAX} bytes",
            path.display()
        );
    }
    Ok(token.to_string())
}

/// The token a client command sends: `--token` (or `LEASEHOLD_TOKEN`),
/// else the content of `--token-file` (or `LEASEHOLD_TOKEN_FILE`), else the
/// local cluster's admin token file if it exists, else none.
pub fn resolve_token(token: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(t) = token {
        return Ok(Some(t.trim().to_string()));
    }
    if let Some(f) = file {
        return read_token_file(f).map(Some);
    }
    let default = default_token_file();
    if default.is_file() {
        tracing::debug!(file = %default.display(), "using the local cluster's admin token");
        return read_token_file(&default).map(Some);
    }
    Ok(None)
}

/// The admin token in `root/admin.token`: read if the file exists, else a
/// new random one written there (mode 0600, never overwritten). Returns
/// the token and its file.
pub fn ensure_admin_token(root: &Path) -> anyhow::Result<(String, PathBuf)> {
    let path = root.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        return Ok((read_token_file(&path)?, path));
    }
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating the data directory {}", root.display()))?;
    let token = new_token();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating the token file {}", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("writing {}", path.display()))?;
    Ok((token, path))
}

/// Flags of `leasehold auth`.
#[derive(Args, Debug)]
pub struct AuthArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuthCommand,
}

/// `leasehold auth` subcommands.
#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Make a new random bearer token and print it with its
    /// `[[auth.principals]]` entry (token_sha256) for the servers' config.
    Token(TokenArgs),
    /// Print the token_sha256 of a token read from standard input (one
    /// line), e.g. to configure an existing token.
    Hash,
}

/// Flags of `leasehold auth token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The principal's name in the printed entry.
    #[arg(long, default_value = "NAME")]
    pub name: String,
    /// Its role: admin, client or reader.
    #[arg(long, default_value = "client", value_parser = parse_role)]
    pub role: Role,
    /// A resource prefix it may use (repeat; `""` = all). Not for admins.
    #[arg(long = "prefix", value_name = "PREFIX")]
    pub prefixes: Vec<String>,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

/// `leasehold auth`.
pub fn auth(args: AuthArgs, format: Format) -> anyhow::Result<u8> {
    match args.command {
        AuthCommand::Token(t) => {
            let token = new_token();
            let hash = TokenDigest::of(&token).to_hex();
            print!("{}", render_token(&t, &token, &hash, format));
        }
        AuthCommand::Hash => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the token from standard input")?;
            let token = line.trim();
            if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
                anyhow::bail!("expected a token of 1 to {TOKEN_BYTES_MAX} bytes on standard input");
            }
            let hash = TokenDigest::of(token).to_hex();
            match format {
                Format::Table => println!("token_sha256 = \"{hash}\""),
                Format::Json => println!("{}", serde_json::json!({ "token_sha256": hash })),
            }
        }
    }
    Ok(crate::exit::OK)
}

/// The output of `leasehold auth token`.
fn render_token(args: &TokenArgs, token: &str, hash: &str, format: Format) -> String {
    let prefixes = if args.role == Role::Admin {
        Vec::new()
    } else if args.prefixes.is_empty() {
        vec![String::new()]
    } else {
        args.prefixes.clone()
    };
    match format {
        Format::Json => format!(
            "{}\n",
            serde_json::json!({
                "name": args.name,
                "token": token,
                "token_sha256": hash,
                "role": args.role.as_str(),
                "prefixes": prefixes,
            })
        ),
        Format::Table => {
            let mut out = format!(
                "# The token: give it to the client (--token-file, LEASEHOLD_TOKEN); it is stored nowhere else.\n{token}\n\n# For every server's config file:\n[[auth.principals]]\nname = {:?}\ntoken_sha256 = \"{hash}\"\nrole = \"{}\"\n",
                args.name, args.role
            );
            if !prefixes.is_empty() {
                let list: Vec<String> = prefixes.iter().map(|p| format!("{p:?}")).collect();
                out.push_str(&format!("prefixes = [{}]\n", list.join(", ")));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        let (token, path) = ensure_admin_token(&root).expect("made");
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, _) = ensure_admin_token(&root).expect("read");
        assert_eq!(again, token, "a second start keeps the token");
        assert_eq!(read_token_file(&path).expect("reads"), token);
    }

    #[test]
    fn explicit_tokens_win_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("t");
        std::fs::write(&file, "  from-file\n").expect("write");
        assert_eq!(
            resolve_token(Some("flag"), Some(&file)).expect("ok"),
            Some("flag".into())
        );
        assert_eq!(
            resolve_token(None, Some(&file)).expect("ok"),
            Some("from-file".into())
        );
        std::fs::write(&file, "\n").expect("write");
        assert!(resolve_token(None, Some(&file)).is_err());
        std::fs::write(&file, "x".repeat(TOKEN_BYTES_MAX + 1)).expect("write");
        assert!(resolve_token(None, Some(&file)).is_err());
        assert!(resolve_token(None, Some(&dir.path().join("missing"))).is_err());
    }

    #[test]
    fn the_printed_entry_parses_as_a_principal() {
        let args = TokenArgs {
            name: "chunkserver".into(),
            role: Role::Client,
            prefixes: vec!["chunk/".into()],
        };
        let token = new_token();
        let hash = TokenDigest::of(&token).to_hex();
        let text = render_token(&args, &token, &hash, Format::Table);
        assert!(text.contains(&format!("\n{token}\n")), "{text}");
        let entry = text
            .split("# For every server's config file:\n")
            .nth(1)
            .expect("entry");
        let line = entry
            .lines()
            .find(|l| l.starts_with("token_sha256"))
            .expect("hash line");
        assert_eq!(line, format!("token_sha256 = \"{hash}\""));
        assert!(entry.contains("prefixes = [\"chunk/\"]"), "{entry}");
    }
}
