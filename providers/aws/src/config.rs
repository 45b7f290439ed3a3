//! Where the AWS clients point. In Lambda everything comes from the
//! environment the service sets; tests point every client at a moto server.

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Overrides of the SDK's environment-based configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// Custom endpoint for every service (moto, LocalStack). `None`: the
    /// real AWS endpoints (or `AWS_ENDPOINT_URL` from the environment).
    pub endpoint_url: Option<String>,
    /// Region; `None`: from the environment (`AWS_REGION`).
    pub region: Option<String>,
    /// Static access key id and secret; `None`: the environment's
    /// credentials (the Lambda execution role).
    pub static_credentials: Option<(String, String)>,
}

impl AwsSettings {
    /// Loads the SDK configuration: the environment's, with these overrides.
    pub async fn load(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some((id, secret)) = &self.static_credentials {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                id,
                secret,
                None,
                None,
                "trigflow-static",
            ));
        }
        loader.load().await
    }
}
