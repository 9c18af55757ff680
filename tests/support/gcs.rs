//! An in-memory Google Cloud Storage server that follows the GCS XML API documentation
//! ("XML API: PUT Object", "GET Object", "HEAD Object", "DELETE Object", "List Objects
//! (V2)" (`GET Bucket` with `list-type=2`), "XML multipart uploads" (`POST Object` with
//! `uploads`, `PUT Object` with `partNumber`/`uploadId`, `POST Object` with `uploadId`,
//! `DELETE Object` with `uploadId`), "PUT Object (copy)" (`x-goog-copy-source`),
//! "Request preconditions" (`x-goog-if-generation-match`), "HTTP headers and common
//! query string parameters for JSON and XML" and "XML API error codes"), as far as the
//! `object_store` crate's GCS client uses it:
//!
//! - path-style URLs, `{endpoint}/{bucket}/{object}`, both names percent-encoded;
//!   one bucket, [`BUCKET`]; any other is 404 `NoSuchBucket`;
//! - every write gives the object a new generation (server-wide, increasing), answered
//!   in `x-goog-generation`; `x-goog-if-generation-match: 0` needs the object absent,
//!   `N` its generation to be N, else 412 `PreconditionFailed`: checked and written
//!   under one lock;
//! - reads honour `generation`, `Range` (206, or 416), `If-Match`/`If-Unmodified-Since`
//!   (412) and `If-None-Match`/`If-Modified-Since` (304);
//! - the ETag is a quoted content digest (SHA-256 cut to 128 bits, standing in for
//!   GCS's MD5; `"…-N"` for an object assembled from N parts);
//! - a list page holds at most `max-keys` (default and cap 1000) keys and common
//!   prefixes, with an opaque `NextContinuationToken`;
//! - multipart uploads take parts of any size (GCS wants 5 MiB but for the last);
//! - every request body is capped at 256 MiB (413 beyond). Authorization is not checked.
//!
//! It listens on 127.0.0.1 only, and records nothing.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::ops::Bound;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};

/// The server's one bucket; tests take prefixes in it.
pub const BUCKET: &str = "bootlace-test";

/// The largest request body accepted.
const BODY_LIMIT: usize = 256 << 20;
/// The default, and largest, `max-keys` of a list.
const MAX_KEYS: usize = 1000;
const GENERATION: &str = "x-goog-generation";
/// The headers of a write that its object keeps and answers on reads (with `x-goog-meta-*`).
const KEPT: [&str; 6] = [
    "content-type",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "x-goog-storage-class",
];

type Answer = Response<Full<Bytes>>;

#[derive(Clone)]
struct Object {
    data: Bytes,
    generation: u64,
    etag: String,
    /// Whole seconds, as the HTTP dates that carry it.
    modified: SystemTime,
    metadata: Vec<(HeaderName, HeaderValue)>,
}

struct Upload {
    bucket: String,
    name: String,
    metadata: Vec<(HeaderName, HeaderValue)>,
    /// Part number → (ETag, bytes).
    parts: BTreeMap<u32, (String, Bytes)>,
}

#[derive(Default)]
struct State {
    buckets: HashMap<String, BTreeMap<String, Object>>,
    uploads: HashMap<String, Upload>,
    last_generation: u64,
}

/// One request, its body read and its names decoded.
struct Call {
    method: Method,
    bucket: String,
    name: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

pub struct Server {
    /// `http://127.0.0.1:PORT`: the `gcs_base_url`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

static GCS: OnceLock<Server> = OnceLock::new();

/// The test binary's server, started on first use.
pub fn gcs() -> &'static Server {
    GCS.get_or_init(start)
}

/// A server of its own, on its own thread and runtime, stopped when dropped.
pub fn start() -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let mut state = State::default();
    state.buckets.insert(BUCKET.to_owned(), BTreeMap::new());
    let state = Arc::new(Mutex::new(state));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let served = state.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            super::imds::serve_http(listener, &mut stopped, move |request| {
                answer(served.clone(), request)
            })
            .await;
        });
    });
    Server {
        endpoint,
        state,
        stop: Some(stop),
        thread: Some(thread),
    }
}

impl Server {
    /// The service account key that points object_store at this server, without OAuth
    /// (`GOOGLE_SERVICE_ACCOUNT_KEY`, or `with_service_account_key`).
    pub fn service_account_key(&self) -> String {
        format!(
            r#"{{"disable_oauth": true, "client_email": "test@example.com", "private_key": "unused", "private_key_id": "unused", "gcs_base_url": "{}"}}"#,
            self.endpoint
        )
    }

    /// A fresh, empty prefix in the bucket, for one test: `BUCKET/PREFIX`.
    pub fn place(&self) -> String {
        format!("{BUCKET}/test-{:016x}", fastrand::u64(..))
    }

    /// The bytes of `key` (under `place`), read straight from the server's memory.
    pub fn object(&self, place: &str, key: &str) -> Option<Vec<u8>> {
        let (bucket, name) = split_place(place, key);
        let state = self.state.lock().unwrap();
        state.buckets.get(bucket)?.get(&name).map(|o| o.data.to_vec())
    }

    /// Writes `key` (under `place`) straight into the server's memory, as a new generation.
    pub fn put(&self, place: &str, key: &str, bytes: Vec<u8>) {
        let (bucket, name) = split_place(place, key);
        let etag = digest(&bytes);
        store(
            &mut self.state.lock().unwrap(),
            bucket,
            &name,
            Object::new(bytes.into(), etag, Vec::new()),
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `bucket/prefix` and `key` → the bucket and the object's name.
fn split_place<'a>(place: &'a str, key: &str) -> (&'a str, String) {
    match place.split_once('/') {
        Some((bucket, prefix)) => (bucket, format!("{prefix}/{key}")),
        None => (place, key.to_owned()),
    }
}

impl Object {
    fn new(data: Bytes, etag: String, metadata: Vec<(HeaderName, HeaderValue)>) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let modified = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        Object {
            data,
            generation: 0,
            etag,
            modified,
            metadata,
        }
    }
}

async fn answer(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Result<Answer, Infallible> {
    let (parts, body) = request.into_parts();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    if length.is_some_and(|n: u64| n > BODY_LIMIT as u64) {
        return Ok(fail("EntityTooLarge"));
    }
    let body = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => return Ok(fail("EntityTooLarge")),
        Err(_) => return Ok(fail("InvalidArgument")),
    };
    let path = parts.uri.path().trim_start_matches('/');
    let (bucket, name) = path.split_once('/').unwrap_or((path, ""));
    let (Some(bucket), Some(name)) = (decode(bucket, false), decode(name, false)) else {
        return Ok(fail("InvalidURI"));
    };
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let call = Call {
        method: parts.method,
        bucket,
        name,
        query,
        headers: parts.headers,
        body,
    };
    let state = &mut state.lock().unwrap();
    Ok(route(state, &call))
}

fn route(state: &mut State, call: &Call) -> Answer {
    let Some(objects) = state.buckets.get_mut(&call.bucket) else {
        return fail("NoSuchBucket");
    };
    let upload = call.query.get("uploadId");
    match (&call.method, call.name.is_empty()) {
        (&Method::GET, true) => list(call, objects),
        (&Method::GET | &Method::HEAD, false) => get(call, objects.get(&call.name)),
        (&Method::PUT, false) if upload.is_some() => put_part(state, call),
        (&Method::PUT, false) if call.headers.contains_key("x-goog-copy-source") => copy(state, call),
        (&Method::PUT, false) => match generation_refused(call, objects.get(&call.name)) {
            Some(refused) => refused,
            None => {
                let object = Object::new(call.body.clone(), digest(&call.body), metadata(&call.headers));
                store(state, &call.bucket, &call.name, object)
            }
        },
        (&Method::POST, false) if call.query.contains_key("uploads") => initiate(state, call),
        (&Method::POST, false) if upload.is_some() => complete(state, call),
        (&Method::DELETE, false) if upload.is_some() => abort(state, call),
        (&Method::DELETE, false) => match objects.remove(&call.name) {
            Some(_) => empty(StatusCode::NO_CONTENT, &[]),
            None => fail("NoSuchKey"),
        },
        _ => fail("MethodNotAllowed"),
    }
}

/// Stores `object` with a new generation: 200 with its ETag and generation.
fn store(state: &mut State, bucket: &str, name: &str, mut object: Object) -> Answer {
    // Microseconds since the epoch, as GCS's generations are, and above every earlier one.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
    state.last_generation = now.max(state.last_generation + 1);
    object.generation = state.last_generation;
    let fields = [
        ("etag", object.etag.clone()),
        (GENERATION, object.generation.to_string()),
    ];
    state
        .buckets
        .get_mut(bucket)
        .unwrap()
        .insert(name.to_owned(), object);
    empty(StatusCode::OK, &fields)
}

/// `x-goog-if-generation-match`: `0` wants no object, `N` the object at generation N;
/// the refusal when that does not hold.
fn generation_refused(call: &Call, current: Option<&Object>) -> Option<Answer> {
    let wanted = call.headers.get("x-goog-if-generation-match")?;
    let Some(wanted) = wanted.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) else {
        return Some(fail("InvalidArgument"));
    };
    let holds = match wanted {
        0 => current.is_none(),
        n => current.is_some_and(|o| o.generation == n),
    };
    (!holds).then(|| fail("PreconditionFailed"))
}

/// GET or HEAD of an object: preconditions, then the whole object or one range.
fn get(call: &Call, object: Option<&Object>) -> Answer {
    let Some(object) = object else {
        return fail("NoSuchKey");
    };
    match call.query.get("generation").map(|g| g.parse::<u64>()) {
        Some(Ok(g)) if g != object.generation => return fail("NoSuchKey"),
        Some(Err(_)) => return fail("InvalidArgument"),
        _ => {}
    }
    let text = |name: HeaderName| call.headers.get(name).and_then(|v| v.to_str().ok());
    let date = |name| text(name).and_then(parse_http_date);
    // RFC 9110 §13.2.2: If-Match, else If-Unmodified-Since; If-None-Match, else If-Modified-Since.
    let failed = match text(header::IF_MATCH) {
        Some(tags) => !etag_listed(tags, &object.etag),
        None => date(header::IF_UNMODIFIED_SINCE).is_some_and(|d| object.modified > d),
    };
    if failed {
        return fail("PreconditionFailed");
    }
    let unmodified = match text(header::IF_NONE_MATCH) {
        Some(tags) => etag_listed(tags, &object.etag),
        None => date(header::IF_MODIFIED_SINCE).is_some_and(|d| object.modified <= d),
    };
    let size = object.data.len() as u64;
    let mut fields = vec![
        ("etag", object.etag.clone()),
        ("last-modified", http_date(object.modified)),
        (GENERATION, object.generation.to_string()),
        ("x-goog-metageneration", "1".to_owned()),
        ("x-goog-stored-content-length", size.to_string()),
        ("accept-ranges", "bytes".to_owned()),
    ];
    if unmodified {
        return empty(StatusCode::NOT_MODIFIED, &fields);
    }
    let (status, body) = match text(header::RANGE).and_then(|r| parse_range(r, size)) {
        None => (StatusCode::OK, object.data.clone()),
        Some(None) => {
            let mut refused = fail("InvalidRange");
            let unsatisfied = HeaderValue::from_str(&format!("bytes */{size}")).unwrap();
            refused.headers_mut().insert(header::CONTENT_RANGE, unsatisfied);
            return refused;
        }
        Some(Some((first, last))) => {
            fields.push(("content-range", format!("bytes {first}-{last}/{size}")));
            (
                StatusCode::PARTIAL_CONTENT,
                object.data.slice(first as usize..=last as usize),
            )
        }
    };
    // HEAD answers the Content-Length that GET would, with no body.
    fields.push(("content-length", body.len().to_string()));
    let body = if call.method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    let mut response = with_body(status, &fields, body);
    response.headers_mut().extend(object.metadata.iter().cloned());
    response
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against `size`: None to ignore the header (not
/// one range, or malformed), Some(None) when unsatisfiable, else the inclusive bounds.
fn parse_range(range: &str, size: u64) -> Option<Option<(u64, u64)>> {
    let (first, last) = range.trim().strip_prefix("bytes=")?.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let bounds = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(first), Ok(last)) if first <= last => (first, last.min(size.saturating_sub(1))),
        (Ok(first), Err(_)) if last.is_empty() => (first, size.saturating_sub(1)),
        (Err(_), Ok(0)) if first.is_empty() => return Some(None),
        (Err(_), Ok(n)) if first.is_empty() => (size.saturating_sub(n), size.saturating_sub(1)),
        _ => return None,
    };
    Some(Some(bounds).filter(|&(first, _)| first < size))
}

/// Does `If-Match`/`If-None-Match` (`*`, or a list of tags) name `etag`?
fn etag_listed(tags: &str, etag: &str) -> bool {
    tags.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// PUT with `x-goog-copy-source: [/]bucket/object`: copies data and metadata.
fn copy(state: &mut State, call: &Call) -> Answer {
    let source = call.headers["x-goog-copy-source"].to_str().unwrap_or("");
    let source = source.trim_start_matches('/').split_once('/');
    let Some((Some(bucket), Some(name))) = source.map(|(b, o)| (decode(b, false), decode(o, false))) else {
        return fail("InvalidArgument");
    };
    let Some(objects) = state.buckets.get(&bucket) else {
        return fail("NoSuchBucket");
    };
    let Some(source) = objects.get(&name) else {
        return fail("NoSuchKey");
    };
    if let Some(refused) = generation_refused(call, state.buckets[&call.bucket].get(&call.name)) {
        return refused;
    }
    let object = Object::new(source.data.clone(), source.etag.clone(), source.metadata.clone());
    let result = format!(
        "<CopyObjectResult><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
        humantime::format_rfc3339_millis(object.modified),
        escape(&object.etag)
    );
    let stored = store(state, &call.bucket, &call.name, object);
    xml(stored.status(), stored.headers(), result)
}

/// POST `?uploads`: a new upload, with the metadata its object will get.
fn initiate(state: &mut State, call: &Call) -> Answer {
    let id = format!("upload-{:016x}", fastrand::u64(..));
    let (bucket, name) = (call.bucket.clone(), call.name.clone());
    let result = format!(
        r#"<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"#,
        escape(&bucket),
        escape(&name)
    );
    let metadata = metadata(&call.headers);
    state.uploads.insert(
        id,
        Upload {
            bucket,
            name,
            metadata,
            parts: BTreeMap::new(),
        },
    );
    xml(StatusCode::OK, &HeaderMap::new(), result)
}

/// The upload `?uploadId=` names, if it is one of this object's.
fn own_upload<'a>(state: &'a mut State, call: &Call) -> Option<&'a mut Upload> {
    let upload = state.uploads.get_mut(&call.query["uploadId"])?;
    (upload.bucket == call.bucket && upload.name == call.name).then_some(upload)
}

/// PUT `?partNumber=N&uploadId=ID`: stores (or replaces) part N; answers its ETag.
fn put_part(state: &mut State, call: &Call) -> Answer {
    let number = call.query.get("partNumber").and_then(|n| n.parse::<u32>().ok());
    let Some(number) = number.filter(|n| (1..=10_000).contains(n)) else {
        return fail("InvalidArgument");
    };
    let Some(upload) = own_upload(state, call) else {
        return fail("NoSuchUpload");
    };
    let etag = digest(&call.body);
    upload.parts.insert(number, (etag.clone(), call.body.clone()));
    empty(StatusCode::OK, &[("etag", etag)])
}

/// POST `?uploadId=ID` with `<CompleteMultipartUpload><Part><PartNumber>N</PartNumber>
/// <ETag>…</ETag></Part>…`: the object is the listed parts, in ascending order.
fn complete(state: &mut State, call: &Call) -> Answer {
    let Some(upload) = own_upload(state, call) else {
        return fail("NoSuchUpload");
    };
    let body = String::from_utf8_lossy(&call.body);
    let part = |xml: &str| {
        Some((
            element(xml, "PartNumber")?.parse().ok()?,
            unescape(element(xml, "ETag")?),
        ))
    };
    let listed: Option<Vec<(u32, String)>> = body.split("<Part>").skip(1).map(part).collect();
    let Some(listed) = listed.filter(|l| !l.is_empty()) else {
        return fail("MalformedXML");
    };
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return fail("InvalidPartOrder");
    }
    let (mut data, mut etags) = (Vec::new(), String::new());
    for (number, etag) in &listed {
        match upload.parts.get(number) {
            Some((stored, bytes)) if stored == etag => {
                data.extend_from_slice(bytes);
                etags.push_str(stored);
            }
            _ => return fail("InvalidPart"),
        }
    }
    if let Some(refused) = generation_refused(call, state.buckets[&call.bucket].get(&call.name)) {
        return refused;
    }
    let metadata = state.uploads.remove(&call.query["uploadId"]).unwrap().metadata;
    let etag = format!(
        "{}-{}\"",
        digest(etags.as_bytes()).trim_end_matches('"'),
        listed.len()
    );
    let result = format!(
        "<CompleteMultipartUploadResult><Location>/{0}/{1}</Location><Bucket>{0}</Bucket><Key>{1}</Key><ETag>{2}</ETag></CompleteMultipartUploadResult>",
        escape(&call.bucket),
        escape(&call.name),
        escape(&etag)
    );
    let stored = store(
        state,
        &call.bucket,
        &call.name,
        Object::new(data.into(), etag, metadata),
    );
    xml(stored.status(), stored.headers(), result)
}

/// DELETE `?uploadId=ID`: the upload and its parts are dropped.
fn abort(state: &mut State, call: &Call) -> Answer {
    if own_upload(state, call).is_none() {
        return fail("NoSuchUpload");
    }
    state.uploads.remove(&call.query["uploadId"]);
    empty(StatusCode::NO_CONTENT, &[])
}

/// GET Bucket, List Objects V2: keys (and, with a delimiter, common prefixes) after
/// `start-after` and the continuation token, in key order, at most `max-keys` of them.
fn list(call: &Call, objects: &BTreeMap<String, Object>) -> Answer {
    let query = &call.query;
    let prefix = query.get("prefix").map_or("", String::as_str);
    let delimiter = query
        .get("delimiter")
        .map(String::as_str)
        .filter(|d| !d.is_empty());
    let max_keys = match query.get("max-keys").map(|n| n.parse::<usize>()) {
        None => MAX_KEYS,
        Some(Ok(n)) => n.min(MAX_KEYS),
        Some(Err(_)) => return fail("InvalidArgument"),
    };
    // The token is the hex of the last key or common prefix answered.
    let token = query
        .get("continuation-token")
        .map(|t| String::from_utf8(hex::decode(t).ok()?).ok());
    let token = match token {
        Some(None) => return fail("InvalidArgument"),
        token => token.flatten(),
    };
    let after = token.as_deref().max(query.get("start-after").map(String::as_str));
    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
    // (name, Some(object)) for a key, (name, None) for a common prefix; one more than a
    // page, to know whether the page is the last.
    let mut entries: Vec<(String, Option<&Object>)> = Vec::new();
    for (key, object) in objects.range::<str, _>((lower, Bound::Unbounded)) {
        if entries.len() > max_keys {
            break;
        }
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let common = delimiter.and_then(|d| rest.find(d).map(|at| &key[..prefix.len() + at + d.len()]));
        match common {
            // Answered already, on this page or the one before.
            Some(common) if after == Some(common) || entries.last().is_some_and(|(n, _)| n == common) => {}
            Some(common) => entries.push((common.to_owned(), None)),
            None => entries.push((key.clone(), Some(object))),
        }
    }
    let truncated = entries.len() > max_keys;
    entries.truncate(max_keys);
    let mut result = format!(
        r#"<ListBucketResult xmlns="http://doc.s3.amazonaws.com/2006-03-01"><Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{max_keys}</MaxKeys><IsTruncated>{truncated}</IsTruncated>"#,
        escape(&call.bucket),
        escape(prefix),
        entries.len()
    );
    if let Some(delimiter) = delimiter {
        result += &format!("<Delimiter>{}</Delimiter>", escape(delimiter));
    }
    if let (true, Some((last, _))) = (truncated, entries.last()) {
        result += &format!(
            "<NextContinuationToken>{}</NextContinuationToken>",
            hex::encode(last)
        );
    }
    // Every Contents, then every CommonPrefixes, as GCS orders them.
    for (key, object) in entries.iter().filter_map(|(n, o)| Some((n, (*o)?))) {
        result += &format!(
            "<Contents><Key>{}</Key><Generation>{}</Generation><MetaGeneration>1</MetaGeneration><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
            escape(key),
            object.generation,
            humantime::format_rfc3339_millis(object.modified),
            escape(&object.etag),
            object.data.len()
        );
    }
    for (common, _) in entries.iter().filter(|(_, o)| o.is_none()) {
        result += &format!(
            "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
            escape(common)
        );
    }
    xml(StatusCode::OK, &HeaderMap::new(), result + "</ListBucketResult>")
}

/// The headers of a write that its object keeps; `Content-Type` defaults as GCS's does.
fn metadata(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let kept = |name: &HeaderName| KEPT.contains(&name.as_str()) || name.as_str().starts_with("x-goog-meta-");
    let mut metadata: Vec<_> = headers
        .iter()
        .filter(|(n, _)| kept(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    if !headers.contains_key(header::CONTENT_TYPE) {
        metadata.push((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ));
    }
    metadata
}

/// The quoted ETag of `data`: SHA-256 cut to 128 bits, in place of GCS's MD5.
fn digest(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(data)[..16]))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate, which RFC 2822 parsers read).
fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

fn parse_http_date(text: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(text).ok()
}

/// The query's parameters, decoded (`+` is a space there).
fn parse_query(query: &str) -> HashMap<String, String> {
    let pairs = query.split('&').filter(|p| !p.is_empty());
    pairs
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(name, true)?, decode(value, true)?))
        })
        .collect()
}

/// Percent-decodes `text`; None when it is not UTF-8 once decoded.
fn decode(text: &str, plus_is_space: bool) -> Option<String> {
    let (bytes, mut out, mut i) = (text.as_bytes(), Vec::new(), 0);
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (b'+', _) if plus_is_space => out.push(b' '),
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The trimmed text of the first `<tag>…</tag>` in `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].trim())
}

const ENTITIES: [(&str, &str); 5] = [
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ("\"", "&quot;"),
    ("'", "&apos;"),
];

fn escape(text: &str) -> String {
    ENTITIES
        .iter()
        .fold(text.to_owned(), |text, (raw, entity)| text.replace(raw, entity))
}

fn unescape(text: &str) -> String {
    ENTITIES
        .iter()
        .rev()
        .fold(text.to_owned(), |text, (raw, entity)| text.replace(entity, raw))
}

fn with_body(status: StatusCode, fields: &[(&str, String)], body: Bytes) -> Answer {
    let mut response = Response::builder().status(status);
    for (name, value) in fields {
        response = response.header(*name, value);
    }
    response.body(Full::new(body)).unwrap()
}

fn empty(status: StatusCode, fields: &[(&str, String)]) -> Answer {
    with_body(status, fields, Bytes::new())
}

/// `body` as an XML document, with `headers`.
fn xml(status: StatusCode, headers: &HeaderMap, body: String) -> Answer {
    let body = format!("<?xml version='1.0' encoding='UTF-8'?>{body}");
    let mut response = with_body(
        status,
        &[("content-type", "application/xml; charset=UTF-8".into())],
        body.into(),
    );
    response
        .headers_mut()
        .extend(headers.iter().map(|(n, v)| (n.clone(), v.clone())));
    response
}

/// An XML API error: `<Error><Code>…</Code><Message>…</Message></Error>`.
fn fail(code: &str) -> Answer {
    use StatusCode as S;
    let (status, message) = match code {
        "NoSuchBucket" => (S::NOT_FOUND, "The specified bucket does not exist."),
        "NoSuchKey" => (S::NOT_FOUND, "The specified key does not exist."),
        "NoSuchUpload" => (S::NOT_FOUND, "The requested upload was not found."),
        "MethodNotAllowed" => (S::METHOD_NOT_ALLOWED, "The method is not allowed here."),
        "PreconditionFailed" => (S::PRECONDITION_FAILED, "A precondition did not hold."),
        "EntityTooLarge" => (S::PAYLOAD_TOO_LARGE, "The request body is too large."),
        "InvalidRange" => (S::RANGE_NOT_SATISFIABLE, "The range cannot be satisfied."),
        "InvalidPart" => (S::BAD_REQUEST, "A listed part was not found."),
        "InvalidPartOrder" => (S::BAD_REQUEST, "The parts are not in ascending order."),
        "MalformedXML" => (S::BAD_REQUEST, "The XML is not well-formed."),
        _ => (S::BAD_REQUEST, "Invalid argument."),
    };
    let body = format!("<Error><Code>{code}</Code><Message>{message}</Message></Error>");
    xml(status, &HeaderMap::new(), body)
}
