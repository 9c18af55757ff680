//! Release archives: deterministic packaging of a tree ([`pack`]), the unpack policy
//! every entry must pass ([`policy`]), checking an existing archive ([`inspect`]), and
//! the file index of a release ([`index`]) and the delta packs built from two of them
//! ([`delta`]).

pub mod delta;
pub mod entries;
pub mod index;
pub mod inspect;
pub mod pack;
pub mod policy;

use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How an archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Gzip,
}

impl Compression {
    /// The archive file extension, as in `blobs/sha256/<hex>.tar.zst`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Zstd => "tar.zst",
            Self::Gzip => "tar.gz",
        }
    }

    /// From a file name's extension.
    pub fn from_name(name: &str) -> Option<Self> {
        if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
            Some(Self::Zstd)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(Self::Gzip)
        } else {
            None
        }
    }

    /// Whether `head` starts the way this compression's streams do.
    pub fn matches_magic(self, head: &[u8]) -> bool {
        match self {
            Self::Zstd => head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
            Self::Gzip => head.starts_with(&[0x1f, 0x8b]),
        }
    }

    /// A decoder over `reader`, which it reads in place: it takes from the reader's
    /// buffer exactly the bytes of the compressed stream, so whatever follows stays there.
    pub fn decoder<'a, R: BufRead + 'a>(self, reader: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Self::Zstd => Box::new(zstd::Decoder::with_buffer(reader)?),
            Self::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        })
    }
}

/// The sha256 and length of the bytes that pass through, in either direction.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner value, the lowercase hex sha256 and the byte count.
    pub fn finish(self) -> (T, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
