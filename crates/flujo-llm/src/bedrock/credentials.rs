//! AWS credentials and region for `bedrock:` models, found the way the AWS SDKs find them (the static part):
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` from the environment first, else the
//! profile (`[providers.bedrock] profile`, else `AWS_PROFILE`, else `default`) of the shared credentials
//! file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`, sections `[NAME]`) and the shared
//! config file (`AWS_CONFIG_FILE`, default `~/.aws/config`, sections `[profile NAME]` and `[default]`).
//! The region: `[providers.bedrock] region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, then the profile's
//! `region`. The environment is read only through the function the registry was given.
//!
//! Profiles that get credentials from elsewhere (`role_arn`, `sso_session`, `credential_process`,
//! `web_identity_token_file`) are not followed: the error says so, and how to export temporary credentials.
//! Secrets never appear in `Debug` output or errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::LlmError;
use crate::http::ApiKey;

/// Static AWS credentials. `Debug` shows none of them.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: ApiKey,
    pub(crate) session_token: Option<ApiKey>,
}

impl AwsCredentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: &str, session_token: Option<&str>) -> Self {
        AwsCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: ApiKey::new(secret_access_key),
            session_token: session_token.map(ApiKey::new),
        }
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &"[REDACTED]")
            .field("secret_access_key", &"[REDACTED]")
            .field("session_token", &self.session_token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// What a Bedrock model signs with, resolved when the model is made; problems are kept and reported by
/// `check_ready` and every call (never when the model is only resolved, as for a replay).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AwsSetup {
    pub credentials: Result<AwsCredentials, LlmError>,
    pub region: Result<String, LlmError>,
}

/// Keys of profiles whose credentials come from somewhere Flujo does not go.
const INDIRECT_KEYS: [&str; 5] =
    ["role_arn", "sso_session", "sso_start_url", "credential_process", "web_identity_token_file"];

impl AwsSetup {
    /// Resolves credentials and region for provider `provider` (its configured `region` and `profile`).
    pub fn resolve(
        provider: &str,
        region: Option<&str>,
        profile: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> AwsSetup {
        let var = |k: &str| env(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let profile = profile.map(str::to_owned).or_else(|| var("AWS_PROFILE")).unwrap_or_else(|| "default".into());
        let home = var("HOME").or_else(|| var("USERPROFILE"));
        let file = |var_name: &str, default: &str| -> Option<PathBuf> {
            match var(var_name) {
                Some(p) => Some(expand_home(&p, home.as_deref())),
                None => home.as_ref().map(|h| Path::new(h).join(".aws").join(default)),
            }
        };
        let credentials_file = file("AWS_SHARED_CREDENTIALS_FILE", "credentials").map(|p| ProfileFile::read(p, false));
        let config_file = file("AWS_CONFIG_FILE", "config").map(|p| ProfileFile::read(p, true));
        let files: Vec<&ProfileFile> = credentials_file.iter().chain(config_file.iter()).collect();

        let credentials = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Ok(AwsCredentials::new(id, &secret, var("AWS_SESSION_TOKEN").as_deref())),
            (Some(_), None) => Err(LlmError::MissingApiKey {
                provider: provider.to_owned(),
                env: "AWS_SECRET_ACCESS_KEY (AWS_ACCESS_KEY_ID is set without it)".into(),
            }),
            _ => profile_credentials(provider, &profile, &files),
        };
        let region = region
            .map(str::to_owned)
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .map(Ok)
            .or_else(|| {
                // The config file names regions; a credentials file sometimes does too.
                let mut files = files.clone();
                files.reverse();
                files.iter().find_map(|f| f.get(&profile, "region")).map(|r| Ok(r.to_owned()))
            })
            .unwrap_or_else(|| {
                Err(LlmError::Config(format!(
                    "{provider}: no AWS region; set `region` under [providers.{provider}], AWS_REGION, or `region` \
                     in profile '{profile}' of ~/.aws/config"
                )))
            })
            .and_then(|r| check_region(provider, r));
        AwsSetup { credentials, region }
    }
}

/// A region becomes part of a host name: letters, digits and `-` only.
fn check_region(provider: &str, region: String) -> Result<String, LlmError> {
    if !region.is_empty() && region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(region)
    } else {
        Err(LlmError::Config(format!("{provider}: '{region}' is not an AWS region name (e.g. us-east-1)")))
    }
}

fn expand_home(path: &str, home: Option<&str>) -> PathBuf {
    match (path.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => Path::new(h).join(rest),
        _ => PathBuf::from(path),
    }
}

fn profile_credentials(provider: &str, profile: &str, files: &[&ProfileFile]) -> Result<AwsCredentials, LlmError> {
    for f in files {
        if let Some(e) = &f.error {
            return Err(LlmError::Config(format!("{provider}: cannot read {}: {e}", f.path.display())));
        }
    }
    // The credentials file first, then the config file (both may hold keys).
    for f in files {
        let get = |k: &str| f.get(profile, k).filter(|v| !v.is_empty());
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(id), Some(secret)) => return Ok(AwsCredentials::new(id, secret, get("aws_session_token"))),
            (Some(_), None) | (None, Some(_)) => {
                return Err(LlmError::Config(format!(
                    "{provider}: profile '{profile}' of {} needs both aws_access_key_id and aws_secret_access_key",
                    f.path.display()
                )))
            }
            (None, None) => {}
        }
    }
    for f in files {
        if let Some(key) = INDIRECT_KEYS.iter().find(|k| f.get(profile, k).is_some()) {
            return Err(LlmError::Config(format!(
                "{provider}: profile '{profile}' of {} gets its credentials through `{key}`, which Flujo does not \
                 follow; export temporary credentials instead (`aws configure export-credentials --profile \
                 {profile} --format env`)",
                f.path.display()
            )));
        }
    }
    Err(LlmError::MissingApiKey {
        provider: provider.to_owned(),
        env: format!("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or profile '{profile}' in ~/.aws/credentials)"),
    })
}

/// One shared config or credentials file: profile name → settings.
#[derive(Debug)]
struct ProfileFile {
    path: PathBuf,
    profiles: BTreeMap<String, BTreeMap<String, String>>,
    /// Reading failed (a missing file is no error: it holds no profile).
    error: Option<String>,
}

impl ProfileFile {
    fn read(path: PathBuf, is_config: bool) -> Self {
        match std::fs::read_to_string(&path) {
            Ok(text) => ProfileFile { profiles: parse_profiles(&text, is_config), path, error: None },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ProfileFile { path, profiles: BTreeMap::new(), error: None }
            }
            Err(e) => ProfileFile { path, profiles: BTreeMap::new(), error: Some(e.kind().to_string()) },
        }
    }

    fn get(&self, profile: &str, key: &str) -> Option<&str> {
        self.profiles.get(profile)?.get(key).map(String::as_str)
    }
}

/// The profiles of an AWS shared file (INI): `[NAME]` sections (in the config file `[profile NAME]` and
/// `[default]`; other kinds such as `[sso-session X]` are skipped), `key = value` lines with keys
/// lower-cased, `#` and `;` comments (whole lines, or after whitespace), indented continuation lines
/// (nested settings) ignored. Repeated sections merge; a later key wins.
fn parse_profiles(text: &str, is_config: bool) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let indented = raw.starts_with([' ', '\t']);
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                current = None;
                continue;
            };
            let name = name.trim();
            current = if !is_config {
                Some(name.to_owned())
            } else if name == "default" {
                Some("default".into())
            } else {
                name.strip_prefix("profile")
                    .filter(|r| r.starts_with([' ', '\t']))
                    .map(|r| r.trim().to_owned())
                    .filter(|n| !n.is_empty())
            };
            if let Some(n) = &current {
                out.entry(n.clone()).or_default();
            }
            continue;
        }
        if indented {
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else { continue };
        let key = key.trim().to_ascii_lowercase();
        if !key.is_empty() {
            out.entry(section.clone()).or_default().insert(key, value.trim().to_owned());
        }
    }
    out
}

/// The line without a `#`/`;` comment (the whole line, or one that follows whitespace).
fn strip_comment(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with(['#', ';']) {
        return "";
    }
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if (b == b'#' || b == b';') && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn parses_shared_files() {
        let config = "# comment\n[default]\nregion = eu-west-1 ; inline\n[profile dev]\nregion=us-west-2\n\
                      s3 =\n  max_concurrent_requests = 20\n[sso-session corp]\nsso_region = us-east-1\n\
                      [profileX]\nregion = nope\n";
        let p = parse_profiles(config, true);
        assert_eq!(p["default"]["region"], "eu-west-1");
        assert_eq!(p["dev"]["region"], "us-west-2");
        assert!(!p["dev"].contains_key("max_concurrent_requests"));
        assert!(!p.contains_key("corp") && !p.contains_key("sso-session corp") && !p.contains_key("X"));
        let creds = "[default]\nAWS_Access_Key_Id = AKID1\naws_secret_access_key = se/cr+et\n[profile dev]\nx = 1\n";
        let c = parse_profiles(creds, false);
        assert_eq!(c["default"]["aws_access_key_id"], "AKID1");
        assert_eq!(c["default"]["aws_secret_access_key"], "se/cr+et");
        assert!(c.contains_key("profile dev"), "the credentials file has no `profile` prefix");
    }

    #[test]
    fn environment_first_then_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(&creds, "[dev]\naws_access_key_id = AKIDDEV\naws_secret_access_key = devsecret\n").unwrap();
        std::fs::write(&config, "[profile dev]\nregion = eu-central-1\n[profile sso]\nsso_session = corp\n").unwrap();
        let (c, k) = (creds.to_str().unwrap(), config.to_str().unwrap());
        let files = [("AWS_SHARED_CREDENTIALS_FILE", c), ("AWS_CONFIG_FILE", k)];

        let mut pairs = files.to_vec();
        pairs.extend([
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_REGION", "us-east-2"),
        ]);
        let s = AwsSetup::resolve("bedrock", None, Some("dev"), &env_of(&pairs));
        assert_eq!(s.credentials, Ok(AwsCredentials::new("AKIDENV", "envsecret", None)));
        assert_eq!(s.region, Ok("us-east-2".into()));

        let mut pairs = files.to_vec();
        pairs.push(("AWS_PROFILE", "dev"));
        let s = AwsSetup::resolve("bedrock", None, None, &env_of(&pairs));
        assert_eq!(s.credentials, Ok(AwsCredentials::new("AKIDDEV", "devsecret", None)));
        assert_eq!(s.region, Ok("eu-central-1".into()));
        assert!(!format!("{s:?}").contains("devsecret") && !format!("{s:?}").contains("AKIDDEV"));
        // The configured region wins; a bad one is refused.
        let s = AwsSetup::resolve("bedrock", Some("ap-south-1"), Some("dev"), &env_of(&files));
        assert_eq!(s.region, Ok("ap-south-1".into()));
        let s = AwsSetup::resolve("bedrock", Some("x.evil.com/"), Some("dev"), &env_of(&files));
        assert!(matches!(s.region, Err(LlmError::Config(_))));

        let s = AwsSetup::resolve("bedrock", None, Some("sso"), &env_of(&files));
        let e = s.credentials.unwrap_err().to_string();
        assert!(e.contains("sso_session") && e.contains("export-credentials"), "{e}");
        let s = AwsSetup::resolve("bedrock", None, Some("nobody"), &env_of(&files));
        assert!(matches!(&s.credentials, Err(LlmError::MissingApiKey { env, .. }) if env.contains("'nobody'")));
        assert!(matches!(s.region, Err(LlmError::Config(_))));
        // The default files under HOME.
        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        std::fs::write(
            dir.path().join(".aws/credentials"),
            "[default]\naws_access_key_id=A\naws_secret_access_key=B\naws_session_token=T\n",
        )
        .unwrap();
        let home = dir.path().to_str().unwrap();
        let s = AwsSetup::resolve("bedrock", None, None, &env_of(&[("HOME", home)]));
        assert_eq!(s.credentials, Ok(AwsCredentials::new("A", "B", Some("T"))));
        // Half a key pair in the environment.
        let s = AwsSetup::resolve("bedrock", None, None, &env_of(&[("HOME", home), ("AWS_ACCESS_KEY_ID", "A")]));
        assert!(
            matches!(&s.credentials, Err(LlmError::MissingApiKey { env, .. }) if env.starts_with("AWS_SECRET_ACCESS_KEY"))
        );
    }
}
