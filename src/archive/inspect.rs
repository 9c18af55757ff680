//! Checking an existing archive before it is pushed: it decodes, every entry passes the
//! unpack policy, and its sha256 is taken over every byte of the file on the way.

use std::io::{self, Read};

use super::entries::{EntryError, walk};
use super::index::Index;
use super::policy::{Kind, Limits, PolicyError, Totals};
use super::{Compression, Hashing};

/// How much of the archive is read at once.
const READ_BUFFER: usize = 128 << 10;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("not a {} archive (its first bytes say otherwise)", .0.extension())]
    WrongFormat(Compression),
    #[error("does not decode: {0}")]
    Decode(io::Error),
    #[error("refused by the unpack policy: {0}")]
    Policy(#[from] PolicyError),
}

/// What inspecting an archive found.
#[derive(Debug)]
pub struct Inspected {
    pub sha256: String,
    pub size: u64,
    pub totals: Totals,
    /// The file index of the tree it unpacks to.
    pub index: Index,
}

/// Reads the whole archive from `reader`, decoding and checking every entry.
pub fn inspect(
    reader: impl Read,
    compression: Compression,
    limits: Limits,
) -> Result<Inspected, InspectError> {
    let mut hashing = Hashing::new(reader);
    let mut head = [0u8; 4];
    let got = read_up_to(&mut hashing, &mut head).map_err(InspectError::Decode)?;
    if !compression.matches_magic(&head[..got]) {
        return Err(InspectError::WrongFormat(compression));
    }
    let (totals, index) = {
        let chained = io::BufReader::with_capacity(READ_BUFFER, (&head[..got]).chain(&mut hashing));
        let decoder = compression.decoder(chained).map_err(InspectError::Decode)?;
        check_entries(decoder, limits)?
    };
    // Whatever follows the tar end marker still belongs to the archive's bytes.
    io::copy(&mut hashing, &mut io::sink()).map_err(InspectError::Decode)?;
    let (_, sha256, size) = hashing.finish();
    Ok(Inspected {
        sha256,
        size,
        totals,
        index,
    })
}

/// Every entry checked and its data hashed (which proves the stream decodes to its end).
fn check_entries(decoded: impl Read, limits: Limits) -> Result<(Totals, Index), InspectError> {
    let mut index = Index::default();
    walk(decoded, limits, |checked, entry| {
        let mode = entry
            .header()
            .mode()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        match checked.kind {
            Kind::File => {
                let mut hashing = Hashing::new(io::sink());
                io::copy(entry, &mut hashing)?;
                let (_, sha256, size) = hashing.finish();
                index.add(checked, mode, Some((size, sha256)), None);
            }
            Kind::Symlink => {
                // The policy took the target as UTF-8.
                let target = entry.link_name_bytes().unwrap_or_default();
                index.add(
                    checked,
                    mode,
                    None,
                    Some(String::from_utf8_lossy(&target).into_owned()),
                );
            }
            Kind::Directory => index.add(checked, mode, None, None),
        }
        Ok(())
    })
    .map(|totals| (totals, index.finish()))
    .map_err(|e| match e {
        EntryError::Policy(policy) => InspectError::Policy(policy),
        EntryError::Decode(err) | EntryError::Write(err) => InspectError::Decode(err),
        EntryError::OversizedHeader => InspectError::Decode(io::Error::other(e.to_string())),
    })
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
