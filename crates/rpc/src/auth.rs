//! HTTP Basic credentials and the `.cookie` file, as in Bitcoin Core.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::error::Error;

/// The user name written into the cookie file; it only makes cookie logins recognisable.
pub const COOKIE_USER: &str = "__cookie__";
/// The cookie file's name inside the data directory.
pub const COOKIE_FILE_NAME: &str = ".cookie";
/// Random bytes in a cookie password (hex-encoded in the file), as in Core.
pub const COOKIE_SECRET_BYTES: usize = 32;

/// How clients must authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// Write a fresh random cookie to `dir/.cookie` at start and delete it at shutdown.
    ///
    /// This is the default: whoever can read the data directory may use the RPC, and no
    /// password lives in a config file.
    Cookie {
        /// The directory for the cookie file, normally the node's data directory.
        dir: PathBuf,
    },
    /// A fixed `rpcuser`/`rpcpassword` pair from the configuration.
    UserPassword {
        /// The user name; must not contain `:` since Basic auth splits on the first one.
        user: String,
        /// The password; must not be empty.
        password: String,
    },
}

/// A `user:password` pair that the server accepts, compared without timing leaks.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    // Only the hash is kept for comparison, so equality takes the same time whatever the input.
    digest: blake3::Hash,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret must not end up in logs.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials for `user` and `password`.
    pub fn new(user: &str, password: &str) -> Result<Self, Error> {
        if user.contains(':') {
            return Err(Error::Config("rpcuser must not contain ':'".into()));
        }
        if password.is_empty() {
            return Err(Error::Config("rpcpassword must not be empty".into()));
        }
        Ok(Self {
            user: user.to_owned(),
            digest: blake3::hash(format!("{user}:{password}").as_bytes()),
        })
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether an `Authorization` header value carries these credentials.
    ///
    /// Both sides are hashed and the hashes compared with BLAKE3's constant-time equality, so
    /// neither the position of the first wrong byte nor the password's length leaks.
    pub fn check_header(&self, header: &[u8]) -> bool {
        let Ok(header) = std::str::from_utf8(header) else {
            return false;
        };
        let Some((scheme, encoded)) = header.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = BASE64.decode(encoded.trim()) else {
            return false;
        };
        blake3::hash(&decoded) == self.digest
    }
}

/// The value of an `Authorization` header for `user` and `password`.
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

/// A cookie file this process wrote; deleting it when dropped means a crashed or stopped server
/// never leaves a valid-looking cookie behind for a later client to trip over.
#[derive(Debug)]
pub struct CookieFile {
    path: PathBuf,
}

impl CookieFile {
    /// Writes a fresh cookie into `dir` (created if missing) and returns it with its credentials.
    ///
    /// The file is written under a temporary name with mode 0600 and then renamed, so a client
    /// never reads a half-written cookie and no other user can ever read it.
    pub fn create(dir: &Path) -> Result<(Self, Credentials), Error> {
        let path = dir.join(COOKIE_FILE_NAME);
        let cookie_error = |reason: String| Error::Cookie {
            path: path.clone(),
            reason,
        };
        let mut secret = [0u8; COOKIE_SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|error| Error::Random(error.to_string()))?;
        let password = hex::encode(secret);
        let credentials = Credentials::new(COOKIE_USER, &password)?;

        fs::create_dir_all(dir).map_err(|error| cookie_error(error.to_string()))?;
        let temporary = dir.join(format!("{COOKIE_FILE_NAME}.tmp"));
        // A stale temporary file may have looser permissions; never reuse it.
        let _ = fs::remove_file(&temporary);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&temporary)
            .map_err(|error| cookie_error(format!("cannot create {temporary:?}: {error}")))?;
        file.write_all(format!("{COOKIE_USER}:{password}").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|error| cookie_error(error.to_string()))?;
        drop(file);
        fs::rename(&temporary, &path).map_err(|error| cookie_error(error.to_string()))?;
        Ok((Self { path }, credentials))
    }

    /// Where the cookie was written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CookieFile {
    fn drop(&mut self) {
        // Nothing useful can be done about a failure here; the next start overwrites the file.
        let _ = fs::remove_file(&self.path);
    }
}

/// Reads `dir/.cookie` and returns its `(user, password)`, as time-cli does.
pub fn read_cookie(dir: &Path) -> Result<(String, String), Error> {
    let path = dir.join(COOKIE_FILE_NAME);
    let text = fs::read_to_string(&path).map_err(|error| Error::Cookie {
        path: path.clone(),
        reason: format!("{error} (is the node running, and is this its data directory?)"),
    })?;
    let line = text.lines().next().unwrap_or("");
    match line.split_once(':') {
        Some((user, password)) if !password.is_empty() => {
            Ok((user.to_owned(), password.to_owned()))
        }
        _ => Err(Error::Cookie {
            path,
            reason: "not of the form user:password".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_accepts_only_the_exact_pair() {
        let credentials = Credentials::new("alice", "secret").unwrap();
        assert!(credentials.check_header(basic_authorization("alice", "secret").as_bytes()));
        assert!(
            credentials
                .check_header(format!("basic  {} ", BASE64.encode("alice:secret")).as_bytes())
        );
        for wrong in [
            basic_authorization("alice", "secreT"),
            basic_authorization("alice", "secret2"),
            basic_authorization("bob", "secret"),
            format!("Bearer {}", BASE64.encode("alice:secret")),
            "Basic !!!not-base64".to_owned(),
            "Basic".to_owned(),
            String::new(),
        ] {
            assert!(!credentials.check_header(wrong.as_bytes()), "{wrong}");
        }
        assert!(!credentials.check_header(&[0xff, 0xfe]));
    }

    #[test]
    fn unusable_credentials_are_rejected() {
        assert!(matches!(
            Credentials::new("a:b", "x"),
            Err(Error::Config(_))
        ));
        assert!(matches!(Credentials::new("a", ""), Err(Error::Config(_))));
    }

    #[test]
    fn cookie_round_trips_and_is_deleted_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let (cookie, credentials) = CookieFile::create(dir.path()).unwrap();
        let (user, password) = read_cookie(dir.path()).unwrap();
        assert_eq!(user, COOKIE_USER);
        assert_eq!(password.len(), 2 * COOKIE_SECRET_BYTES);
        assert!(credentials.check_header(basic_authorization(&user, &password).as_bytes()));
        let path = cookie.path().to_owned();
        drop(cookie);
        assert!(!path.exists());
        assert!(matches!(read_cookie(dir.path()), Err(Error::Cookie { .. })));
    }
}
