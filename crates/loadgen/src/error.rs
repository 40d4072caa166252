//! The crate's one error type.

use tidegate_flv::file::FileError;

/// Everything that can stop a bench run before it starts, or a piece of it while it runs.
///
/// Errors of single publishers and viewers during a run do not stop the run: they are
/// counted in the [`Report`](crate::Report). [`LoadgenError::is_input_error`] tells a bad
/// input file apart from a bad command line.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The input file does not start with an FLV header (nor a TS sync byte).
    #[error("not an FLV or MPEG-TS file; make one with `tidegate bench --generate-clip`")]
    NotFlv,
    /// The FLV file is truncated or malformed (where, and what is wrong).
    #[error(transparent)]
    Flv(FileError),
    /// The file holds no audio or video tag to send.
    #[error("the input holds no audio or video")]
    NoMedia,
    /// The media cannot be sent over the chosen transport (an MPEG-TS input for RTMP,
    /// AV1 for SRT, a TS file without PCR, ...).
    #[error("unusable media: {0}")]
    Media(String),
    /// The file is larger than [`MAX_FILE_BYTES`](crate::flv_file::MAX_FILE_BYTES).
    #[error("input of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The file's size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A URL that cannot be used (bad scheme, no host, ...).
    #[error("bad URL `{url}`: {why}")]
    BadUrl {
        /// The URL (stream keys are secrets: only the template is ever shown).
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A protocol `tidegate bench` does not speak (RTMPS).
    #[error("{0} is not supported by `tidegate bench`")]
    Unsupported(&'static str),
    /// A setting out of range (zero publishers, a zero ramp-up rate, ...).
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
    /// Reading the input or another local I/O failure.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl LoadgenError {
    /// Whether the input media file is at fault (as opposed to the settings or the machine).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            LoadgenError::NotFlv
                | LoadgenError::Flv(_)
                | LoadgenError::NoMedia
                | LoadgenError::Media(_)
                | LoadgenError::TooLarge { .. }
        )
    }
}

impl From<FileError> for LoadgenError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::NotFlv => LoadgenError::NotFlv,
            e => LoadgenError::Flv(e),
        }
    }
}
