//! What can go wrong encoding or decoding the store's own files (WAL records, Parquet
//! blocks, the typed-JSON columns, `index.bin`). Callers that know which file it was wrap
//! a [`FormatError`] into [`StoreError::Corrupt`] with the path; writes that fail become
//! [`StoreError::Io`] or [`StoreError::Unavailable`].

use strand_core::StoreError;

/// An encoding or decoding failure of one of the store's formats.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The Parquet library refused the data.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An Arrow array could not be built or read.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A postcard-encoded structure (WAL payload, search index) did not decode.
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
    /// A JSON document (typed-JSON column, `meta.json`) did not parse.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// zstd compression or decompression failed.
    #[error("zstd: {0}")]
    Zstd(#[source] std::io::Error),
    /// A record's checksum does not match its bytes.
    #[error("checksum mismatch")]
    Checksum,
    /// The data is from a version of the format this binary does not know.
    #[error("unknown {what} version {found}")]
    UnknownVersion {
        /// Which format.
        what: &'static str,
        /// The version found.
        found: u32,
    },
    /// The Parquet reader panicked on malformed input (caught; blocks are checksummed,
    /// so this is the second line of defence).
    #[error("parquet reader panicked on malformed data")]
    ReaderPanicked,
    /// A value does not have the shape the schema says (a wrong column type, a field
    /// missing from a typed-JSON object, a bad id).
    #[error("{0}")]
    Invalid(String),
}

impl FormatError {
    /// A shape error with this description.
    pub fn invalid(what: impl Into<String>) -> Self {
        FormatError::Invalid(what.into())
    }

    /// The error as damage found in the file at `path`.
    pub fn corrupt_at(self, path: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt { path: path.to_string(), reason: self.to_string() }
    }
}
