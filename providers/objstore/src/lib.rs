//! # trigflow-objstore
//!
//! An S3-compatible object store for trigflow's claim check and data-ready
//! parts: [`S3Blobs`] implements the core [`BlobStore`] seam over
//! `aws-sdk-s3` with a custom endpoint and path-style addressing, which is
//! what MinIO, SeaweedFS and other self-hosted S3 servers expect (AWS S3
//! itself accepts it too).
//!
//! Objects are named by `s3://BUCKET/KEY` URIs. Credentials come from the
//! settings, from the standard `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) variables, or from the
//! file `AWS_SHARED_CREDENTIALS_FILE` names (profile `AWS_PROFILE`), the region from
//! `AWS_REGION` / `AWS_DEFAULT_REGION` (default `us-east-1`, which MinIO
//! accepts). Every error names the endpoint and the bucket.
//!
//! ```no_run
//! use std::sync::Arc;
//! use trigflow_core::claim::ClaimCheck;
//! use trigflow_objstore::{S3Blobs, S3Settings};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = S3Settings::new("http://127.0.0.1:9000", "trigflow").with_process_env();
//! let blobs = S3Blobs::new(settings)?;
//! blobs.ensure_bucket().await?;
//! let claims = ClaimCheck::new(Arc::new(blobs), trigflow_core::claim::DEFAULT_THRESHOLD);
//! # Ok(()) }
//! ```
//!
//! Features: `testing` adds `testing::SeaweedServer`, a real SeaweedFS
//! (`weed mini`) on free loopback ports for tests.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use trigflow_core::claim::{BlobError, BlobStore};

#[cfg(feature = "testing")]
pub mod testing;

/// The standard AWS variables the settings read.
pub mod env {
    /// Access key id.
    pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    /// Secret access key.
    pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    /// Session token (temporary credentials).
    pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
    /// Region.
    pub const REGION: &str = "AWS_REGION";
    /// Region, older spelling.
    pub const DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
    /// The shared credentials file (INI, `aws_access_key_id` /
    /// `aws_secret_access_key` under `[PROFILE]`), read when the key
    /// variables are not set; e.g. a Kubernetes Secret mounted as a file.
    pub const SHARED_CREDENTIALS_FILE: &str = "AWS_SHARED_CREDENTIALS_FILE";
    /// The profile of the credentials file (default `default`).
    pub const PROFILE: &str = "AWS_PROFILE";
}

/// The region used when none is set; MinIO and SeaweedFS accept it.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where the objects are and how to sign requests.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `http(s)://HOST:PORT` of the S3 API.
    pub endpoint: String,
    /// The bucket objects are written to.
    pub bucket: String,
    /// The signing region.
    pub region: String,
    /// Access key id; `None` until set or read from the environment.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// `bucket` at `endpoint`, region [`DEFAULT_REGION`], no credentials
    /// yet.
    pub fn new(endpoint: impl Into<String>, bucket: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            region: DEFAULT_REGION.into(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }
    }

    /// Sets the credentials explicitly.
    pub fn with_credentials(
        mut self,
        key_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.access_key_id = Some(key_id.into());
        self.secret_access_key = Some(secret.into());
        self
    }

    /// Fills the credentials (if not set) and the region from the standard
    /// AWS variables in `env` (injected, so tests need no process
    /// environment): the key variables, else the shared credentials file.
    pub fn with_env(mut self, env: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| {
            env.get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if self.access_key_id.is_none() && self.secret_access_key.is_none() {
            self.access_key_id = get(env::ACCESS_KEY_ID);
            self.secret_access_key = get(env::SECRET_ACCESS_KEY);
            self.session_token = get(env::SESSION_TOKEN);
        }
        if self.access_key_id.is_none()
            && self.secret_access_key.is_none()
            && let Some(path) = get(env::SHARED_CREDENTIALS_FILE)
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            let profile = get(env::PROFILE).unwrap_or_else(|| "default".into());
            let fields = credentials_profile(&text, &profile);
            self.access_key_id = fields.get("aws_access_key_id").cloned();
            self.secret_access_key = fields.get("aws_secret_access_key").cloned();
            self.session_token = fields.get("aws_session_token").cloned();
        }
        if let Some(region) = get(env::REGION).or_else(|| get(env::DEFAULT_REGION)) {
            self.region = region;
        }
        self
    }

    /// [`S3Settings::with_env`] with the process's environment.
    pub fn with_process_env(self) -> Self {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        self.with_env(&env)
    }
}

/// The `key = value` pairs of `[profile]` in an AWS credentials file.
pub fn credentials_profile(text: &str, profile: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == profile;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    out
}

/// A failure to configure or set up the object store.
#[derive(Debug, thiserror::Error)]
pub enum ObjStoreError {
    /// The endpoint is not an `http(s)://` URL.
    #[error(
        "S3 endpoint {endpoint:?} (bucket {bucket}): expected http://HOST:PORT or https://HOST:PORT"
    )]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// The bucket.
        bucket: String,
    },
    /// The bucket name is empty.
    #[error("S3 endpoint {endpoint}: the bucket name is empty")]
    EmptyBucket {
        /// The endpoint.
        endpoint: String,
    },
    /// No credentials were given or found.
    #[error(
        "S3 endpoint {endpoint} (bucket {bucket}): no credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE to a readable credentials file"
    )]
    MissingCredentials {
        /// The endpoint.
        endpoint: String,
        /// The bucket.
        bucket: String,
    },
    /// The bucket could not be found or created.
    #[error("S3 endpoint {endpoint}: cannot use bucket {bucket}: {message}")]
    Bucket {
        /// The endpoint.
        endpoint: String,
        /// The bucket.
        bucket: String,
        /// What failed.
        message: String,
        /// Whether trying again may succeed (the server is starting).
        retryable: bool,
    },
}

impl ObjStoreError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ObjStoreError::Bucket {
                retryable: true,
                ..
            }
        )
    }
}

/// The [`BlobStore`] over an S3 API.
#[derive(Clone)]
pub struct S3Blobs {
    client: aws_sdk_s3::Client,
    settings: S3Settings,
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Blobs")
            .field("endpoint", &self.settings.endpoint)
            .field("bucket", &self.settings.bucket)
            .finish_non_exhaustive()
    }
}

/// What a write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// `s3://bucket/key`.
    pub uri: String,
    /// The ETag the server returned, without quotes.
    pub etag: Option<String>,
}

/// Splits `s3://bucket/key` into bucket and key.
pub fn parse_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

/// `s3://bucket/key`.
pub fn uri(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// Whether an SDK failure may go away on a retry, and its description.
fn classify<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> (String, bool)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = DisplayErrorContext(e).to_string();
    let retryable = match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            s.raw().status().as_u16() >= 500
                || matches!(
                    s.err().code(),
                    Some("SlowDown" | "Throttling" | "RequestTimeout")
                )
        }
        _ => false,
    };
    (message, retryable)
}

impl S3Blobs {
    /// A client for `settings`; checks the endpoint, bucket and
    /// credentials (no request is made: see [`S3Blobs::ensure_bucket`]).
    pub fn new(settings: S3Settings) -> Result<Self, ObjStoreError> {
        let endpoint = settings.endpoint.trim().trim_end_matches('/').to_owned();
        if settings.bucket.trim().is_empty() {
            return Err(ObjStoreError::EmptyBucket { endpoint });
        }
        let host = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        if host.is_none_or(str::is_empty) {
            return Err(ObjStoreError::InvalidEndpoint {
                endpoint,
                bucket: settings.bucket,
            });
        }
        let (Some(key_id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key)
        else {
            return Err(ObjStoreError::MissingCredentials {
                endpoint,
                bucket: settings.bucket,
            });
        };
        let credentials = Credentials::new(
            key_id,
            secret,
            settings.session_token.clone(),
            None,
            "trigflow-settings",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            // MinIO and SeaweedFS serve `http://host/bucket/key`, not
            // virtual-hosted `http://bucket.host/key`.
            .force_path_style(true)
            // Self-hosted servers differ in which flexible checksums they
            // know; the claim check verifies SHA-256 itself.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            )
            .build();
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(config),
            settings: S3Settings {
                endpoint,
                ..settings
            },
        })
    }

    /// The settings (endpoint normalised).
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// The bucket objects are written to.
    pub fn bucket(&self) -> &str {
        &self.settings.bucket
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.settings.endpoint
    }

    /// The underlying SDK client.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Creates the bucket if it does not exist. Safe to call from every
    /// process at once.
    pub async fn ensure_bucket(&self) -> Result<(), ObjStoreError> {
        let bucket = &self.settings.bucket;
        let fail = |message: String, retryable: bool| ObjStoreError::Bucket {
            endpoint: self.settings.endpoint.clone(),
            bucket: bucket.clone(),
            message,
            retryable,
        };
        if self
            .client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(s))
                if s.err().is_bucket_already_owned_by_you()
                    || s.err().is_bucket_already_exists() =>
            {
                Ok(())
            }
            Err(e) => {
                let (message, retryable) = classify(&e);
                Err(fail(message, retryable))
            }
        }
    }

    /// Writes `bytes` under `key` in the bucket, returning its URI and ETag.
    pub async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, BlobError> {
        let bucket = &self.settings.bucket;
        let out = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| {
                let (message, retryable) = classify(&e);
                BlobError::Backend {
                    target: uri(bucket, key),
                    message: format!("put at endpoint {}: {message}", self.settings.endpoint),
                    retryable,
                }
            })?;
        Ok(PutOutcome {
            uri: uri(bucket, key),
            etag: out.e_tag().map(|t| t.trim_matches('"').to_owned()),
        })
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<String, BlobError> {
        Ok(self.put_object(key, bytes).await?.uri)
    }

    async fn get(&self, uri: &str) -> Result<Vec<u8>, BlobError> {
        let Some((bucket, key)) = parse_uri(uri) else {
            return Err(BlobError::Backend {
                target: uri.to_owned(),
                message: format!(
                    "not an s3://BUCKET/KEY URI (endpoint {})",
                    self.settings.endpoint
                ),
                retryable: false,
            });
        };
        let backend = |message: String, retryable: bool| BlobError::Backend {
            target: uri.to_owned(),
            message: format!("get at endpoint {}: {message}", self.settings.endpoint),
            retryable,
        };
        let out = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(SdkError::ServiceError(s))
                if s.err().is_no_such_key() || s.raw().status().as_u16() == 404 =>
            {
                return Err(BlobError::NotFound {
                    uri: uri.to_owned(),
                });
            }
            Err(e) => {
                let (message, retryable) = classify(&e);
                return Err(backend(message, retryable));
            }
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| backend(format!("reading the body: {e}"), true))?;
        Ok(body.into_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn settings_read_the_standard_variables_unless_set() {
        let vars = env(&[
            (env::ACCESS_KEY_ID, "id"),
            (env::SECRET_ACCESS_KEY, "secret"),
            (env::DEFAULT_REGION, "eu-west-1"),
        ]);
        let s = S3Settings::new("http://h:9000", "b").with_env(&vars);
        assert_eq!(s.access_key_id.as_deref(), Some("id"));
        assert_eq!(s.secret_access_key.as_deref(), Some("secret"));
        assert_eq!(s.region, "eu-west-1");
        let explicit = S3Settings::new("http://h:9000", "b")
            .with_credentials("mine", "s")
            .with_env(&vars);
        assert_eq!(explicit.access_key_id.as_deref(), Some("mine"));
        assert!(!format!("{explicit:?}").contains("secret"));
    }

    #[test]
    fn a_shared_credentials_file_is_read_when_the_variables_are_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "# mounted from a Secret\n[other]\naws_access_key_id = no\n\n[default]\naws_access_key_id = AKID\naws_secret_access_key=s3cr3t\n",
        )
        .expect("write");
        let path = file.display().to_string();
        let s = S3Settings::new("http://h:9000", "b")
            .with_env(&env(&[(env::SHARED_CREDENTIALS_FILE, path.as_str())]));
        assert_eq!(s.access_key_id.as_deref(), Some("AKID"));
        assert_eq!(s.secret_access_key.as_deref(), Some("s3cr3t"));
        let s = S3Settings::new("http://h:9000", "b").with_env(&env(&[
            (env::SHARED_CREDENTIALS_FILE, path.as_str()),
            (env::PROFILE, "other"),
        ]));
        assert_eq!(s.access_key_id.as_deref(), Some("no"));
        assert_eq!(s.secret_access_key, None);
        // The variables win over the file.
        let s = S3Settings::new("http://h:9000", "b").with_env(&env(&[
            (env::SHARED_CREDENTIALS_FILE, path.as_str()),
            (env::ACCESS_KEY_ID, "var"),
            (env::SECRET_ACCESS_KEY, "x"),
        ]));
        assert_eq!(s.access_key_id.as_deref(), Some("var"));
    }

    #[test]
    fn bad_settings_are_rejected_naming_endpoint_and_bucket() {
        let err = S3Blobs::new(S3Settings::new("h:9000", "b").with_credentials("a", "b"))
            .expect_err("no scheme");
        assert!(
            matches!(err, ObjStoreError::InvalidEndpoint { ref endpoint, ref bucket } if endpoint == "h:9000" && bucket == "b")
        );
        let err = S3Blobs::new(S3Settings::new("http://h:9000", "b")).expect_err("no creds");
        assert!(matches!(err, ObjStoreError::MissingCredentials { .. }));
        let err = S3Blobs::new(S3Settings::new("http://h:9000", " ").with_credentials("a", "b"))
            .expect_err("no bucket");
        assert!(matches!(err, ObjStoreError::EmptyBucket { .. }));
    }

    #[test]
    fn uris_round_trip() {
        assert_eq!(parse_uri(&uri("b", "k/x.json")), Some(("b", "k/x.json")));
        assert_eq!(parse_uri("s3://b/"), None);
        assert_eq!(parse_uri("http://b/k"), None);
    }
}
