//! The HTTP client under the S3 store, with one repair: some S3-compatible servers
//! (`rclone serve s3` among them) answer a ranged GET with `200 OK` while sending just
//! the range and a `Content-Range` header that says so. `object_store` refuses any
//! answer to a range request that is not `206`, so such an answer is relabelled `206`
//! here when its `Content-Range` is exactly the range asked for. Any other `200` (the
//! whole object, with or without `Content-Range`) is passed on unchanged; `object_store`
//! refuses it, and the deploy reads the archive as one stream instead. Whatever the server sends, the deploy checks the archive's
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
        let asked = request.headers().get(RANGE).cloned();
        let mut response = self.0.execute(request).await?;
        if response.status() == StatusCode::OK
            && let Some(asked) = asked
            && let Some(sent) = response.headers().get(CONTENT_RANGE)
            && same_range(asked.as_bytes(), sent.as_bytes())
        {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        Ok(response)
    }
}

/// Whether `Content-Range: bytes a-b/size` covers exactly `Range: bytes=a-b`, or
/// `Range: bytes=a-` (the rest of the object, as a resumed read asks) with b = size - 1.
fn same_range(asked: &[u8], sent: &[u8]) -> bool {
    let (Some(asked), Some(sent)) = (asked.strip_prefix(b"bytes="), sent.strip_prefix(b"bytes ")) else {
        return false;
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (asked, sent) = (text(asked), text(sent));
    let Some((range, total)) = sent.split_once('/') else {
        return false;
    };
    if asked == range {
        return true;
    }
    let (Some(start), Some((sent_start, sent_end))) = (asked.strip_suffix('-'), range.split_once('-')) else {
        return false;
    };
    let last = total.parse::<u64>().ok().and_then(|t| t.checked_sub(1));
    start == sent_start && last.is_some_and(|last| sent_end.parse::<u64>().ok() == Some(last))
}

#[cfg(test)]
mod tests {
    use super::same_range;

    #[test]
    fn only_the_range_asked_for_is_taken() {
        assert!(same_range(b"bytes=0-8388607", b"bytes 0-8388607/1036646345"));
        assert!(!same_range(b"bytes=0-8388607", b"bytes 0-1036646344/1036646345"));
        assert!(!same_range(b"bytes=0-99", b"bytes */1000"));
        assert!(!same_range(b"items=0-99", b"items 0-99/1000"));
        assert!(same_range(b"bytes=500-", b"bytes 500-999/1000"));
        assert!(!same_range(b"bytes=500-", b"bytes 0-999/1000"));
        assert!(!same_range(b"bytes=500-", b"bytes 500-998/1000"));
    }
}
