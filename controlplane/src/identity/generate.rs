//! `weft identity generate`: a new trust anchor and issuer, written to a directory in the
//! layout `weft controller --identity-dir` reads.

use super::ca::{self, Generated, ANCHORS_FILE, ISSUER_CERT_FILE, ISSUER_KEY_FILE};
use crate::cli::GenerateArgs;
use crate::duration::{date, date_time};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use time::OffsetDateTime;

/// Why nothing (or not everything) was written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{0}")]
    Ca(#[from] ca::CaError),
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to overwrite {}: pass --force to replace {}", list(.0), if .0.len() == 1 { "it" } else { "them" })]
    Exists(Vec<PathBuf>),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn main(args: GenerateArgs) -> ExitCode {
    match run(&args, OffsetDateTime::now_utc()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft identity generate: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &GenerateArgs, now: OffsetDateTime) -> Result<(), GenerateError> {
    let g = ca::generate(
        &args.trust_domain,
        &args.control_plane_namespace,
        args.anchor_lifetime,
        args.issuer_lifetime,
        now,
    )?;
    let [anchor, issuer, key] = write_files(&args.out, &g, args.force)?;
    println!(
        "weft identity: wrote {} (trust anchor: give it to every proxy; valid until {})",
        anchor.display(),
        date_time(g.anchor_not_after)
    );
    println!(
        "weft identity: wrote {} (issuer certificate, signed by the trust anchor; valid until {})",
        issuer.display(),
        date_time(g.issuer_not_after)
    );
    println!(
        "weft identity: wrote {} (issuer private key, mode 0600: only the controller may read it)",
        key.display()
    );
    println!(
        "weft identity: trust domain {}, control-plane namespace {}; the anchor's private key was not kept",
        args.trust_domain, args.control_plane_namespace
    );
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "WARNING: the trust anchor expires on {}; replace it before then (see docs/identity.md)",
        date(g.anchor_not_after)
    );
    let _ = writeln!(
        err,
        "WARNING: the issuer certificate expires on {}; rotate it before then (see docs/identity.md)",
        date(g.issuer_not_after)
    );
    Ok(())
}

/// Writes `ca.crt`, `issuer.crt` and `issuer.key` (mode 0600) into `dir`, creating it if
/// needed. Without `force`, refuses before writing anything if any of them exists.
pub fn write_files(dir: &Path, g: &Generated, force: bool) -> Result<[PathBuf; 3], GenerateError> {
    std::fs::create_dir_all(dir).map_err(|source| GenerateError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = [
        (dir.join(ANCHORS_FILE), g.anchor_pem.as_str(), 0o644),
        (dir.join(ISSUER_CERT_FILE), g.issuer_pem.as_str(), 0o644),
        (dir.join(ISSUER_KEY_FILE), g.issuer_key_pem.as_str(), 0o600),
    ];
    if !force {
        let existing: Vec<PathBuf> = files
            .iter()
            .filter(|(p, _, _)| p.symlink_metadata().is_ok())
            .map(|(p, _, _)| p.clone())
            .collect();
        if !existing.is_empty() {
            return Err(GenerateError::Exists(existing));
        }
    }
    for (path, contents, mode) in &files {
        write_file(path, contents, *mode, force).map_err(|source| GenerateError::Write {
            path: path.clone(),
            source,
        })?;
    }
    let [(a, _, _), (i, _, _), (k, _, _)] = files;
    Ok([a, i, k])
}

/// Without `replace`, creates the file exclusively. With it, writes a temporary file and
/// renames it over the old one, so the mode is the new file's and no reader sees half a key.
fn write_file(path: &Path, contents: &str, mode: u32, replace: bool) -> std::io::Result<()> {
    let target = if replace {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp{}", std::process::id()));
        path.with_file_name(name)
    } else {
        path.to_path_buf()
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    if replace {
        let _ = std::fs::remove_file(&target);
    }
    let mut f = opts.open(&target)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    drop(f);
    #[cfg(unix)]
    {
        // The umask may have narrowed the mode; make it exact.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
    }
    if replace {
        std::fs::rename(&target, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ca::tests::generated;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-gen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_refuses_to_overwrite_and_replaces_with_force() {
        let dir = temp_dir("write");
        let g = generated();
        let [a, i, k] = write_files(&dir, &g, false).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), g.anchor_pem);
        assert_eq!(std::fs::read_to_string(&i).unwrap(), g.issuer_pem);
        assert_eq!(std::fs::read_to_string(&k).unwrap(), g.issuer_key_pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&k), 0o600);
            assert_eq!(mode(&a), 0o644);
        }

        let g2 = generated();
        let err = write_files(&dir, &g2, false).unwrap_err().to_string();
        assert!(err.starts_with("refusing to overwrite "), "{err}");
        assert!(
            err.contains("ca.crt") && err.contains("issuer.key"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&k).unwrap(),
            g.issuer_key_pem,
            "untouched"
        );

        // Only one file present is still a refusal, and nothing else is written.
        std::fs::remove_file(&a).unwrap();
        std::fs::remove_file(&i).unwrap();
        let err = write_files(&dir, &g2, false).unwrap_err().to_string();
        assert!(
            err.contains("issuer.key: pass --force to replace it"),
            "{err}"
        );
        assert!(!a.exists());

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        write_files(&dir, &g2, true).unwrap();
        assert_eq!(std::fs::read_to_string(&k).unwrap(), g2.issuer_key_pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "--force leaves the key private");
        }
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
