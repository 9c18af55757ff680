//! The EC2 instance metadata service as an identity source (DESIGN §3).

mod client;
pub mod endpoint;

use std::time::Instant;

use anyhow::Context;

pub use client::{ImdsClient, ImdsError};

use super::{IdentitySource, InstanceFacts};

pub struct ImdsSource {
    client: ImdsClient,
}

impl ImdsSource {
    /// A source configured by the AWS SDK variables; errors if they disable IMDS or
    /// name a bad endpoint.
    pub fn from_env(v1_fallback: bool, deadline: Instant) -> anyhow::Result<Self> {
        let settings = endpoint::settings(v1_fallback, |name| std::env::var(name).ok())?;
        let client = ImdsClient::new(settings.endpoint, settings.v1_allowed, deadline)?;
        Ok(Self { client })
    }

    /// A metadata value as trimmed text; `None` when IMDS has no such path.
    async fn text(&mut self, path: &str) -> anyhow::Result<Option<String>> {
        let answer = self.client.get(path).await.with_context(|| self.reading(path))?;
        answer
            .map(|bytes| String::from_utf8(bytes).map(|text| text.trim().to_owned()))
            .transpose()
            .with_context(|| format!("{}: not UTF-8 text", self.reading(path)))
    }

    fn reading(&self, path: &str) -> String {
        format!("reading {path} from {}", self.describe())
    }
}

impl IdentitySource for ImdsSource {
    fn describe(&self) -> String {
        format!("IMDS at {}", self.client.endpoint())
    }

    async fn facts(&mut self) -> anyhow::Result<InstanceFacts> {
        let machine_id = self.text("meta-data/instance-id").await?;
        if machine_id.is_none() {
            anyhow::bail!(
                "{}: IMDS has no meta-data/instance-id",
                self.reading("meta-data/instance-id")
            );
        }
        Ok(InstanceFacts {
            machine_id,
            region: self.text("meta-data/placement/region").await?,
            availability_zone: self.text("meta-data/placement/availability-zone").await?,
            instance_type: self.text("meta-data/instance-type").await?,
            user_data: self
                .client
                .get("user-data")
                .await
                .with_context(|| self.reading("user-data"))?,
        })
    }
}
