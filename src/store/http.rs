//! The HTTP client under the S3 store, with one repair: some S3-compatible servers
//! (`rclone serve s3` among them) answer a ranged GET with `200 OK` while sending just
//! the range and a `Content-Range` header that says so. `object_store` refuses any
//! answer to a range request that is not `206`, so such an answer is relabelled `206`
//! here, and `object_store` then checks that `Content-Range` is exactly the range asked
//! for. A `200` without `Content-Range` (the whole object) is passed on unchanged and
//! refused as before. Whatever the server sends, the deploy checks the archive's
//! sha256, so a server that lies in `Content-Range` yields a failed deploy, never a
//! wrong one.

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};

/// Builds [`RangeRepair`] clients over `object_store`'s own reqwest client.
#[derive(Debug, Default)]
pub struct Connector;

impl HttpConnector for Connector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(RangeRepair(inner)))
    }
}

#[derive(Debug)]
struct RangeRepair(HttpClient);

#[async_trait]
impl HttpService for RangeRepair {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let ranged = request.headers().contains_key(RANGE);
        let mut response = self.0.execute(request).await?;
        if ranged && response.status() == StatusCode::OK && response.headers().contains_key(CONTENT_RANGE) {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        Ok(response)
    }
}
