//! Where a test run keeps its things: the binary under test, the cargo target directory
//! (logs in `target/test-logs`, generated media in `target/test-media`), and names unique
//! within the run.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The name of the binary under test, as its `[[bin]]` target calls it.
const BIN: &str = "tidegate";

/// The cargo profile directory the running test was built into (`target/debug`): the
/// parent of the `deps` directory that holds the test executable.
fn profile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe()
            .unwrap_or_else(|e| panic!("cannot locate the running test executable: {e}"));
        exe.ancestors()
            .find(|d| d.file_name().is_some_and(|n| n == "deps"))
            .and_then(Path::parent)
            .unwrap_or_else(|| {
                panic!(
                    "{} is not in a cargo `deps` directory: run the tests with cargo",
                    exe.display()
                )
            })
            .to_path_buf()
    })
}

/// The cargo target directory of this build: the ancestor of the profile directory that holds
/// cargo's `CACHEDIR.TAG` (the target root, also when building for an explicit `--target`),
/// else the profile directory's parent.
pub fn target_dir() -> PathBuf {
    let profile = profile_dir();
    profile
        .ancestors()
        .skip(1)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .or_else(|| profile.parent())
        .unwrap_or(profile)
        .to_path_buf()
}

/// The `tidegate` binary under test.
///
/// Cargo passes `CARGO_BIN_EXE_tidegate` to the compiler only for the integration tests of
/// the package that owns the binary, not to this library. So the path comes from the
/// environment of the running test where the runner sets it (nextest's
/// `NEXTEST_BIN_EXE_tidegate`, cargo's `CARGO_BIN_EXE_tidegate`), else from where cargo puts
/// binaries: next to the `deps` directory of the test executable. Both `cargo nextest run
/// -p tidegate` and `cargo test -p tidegate` build the binary before its integration tests.
pub fn tidegate_bin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let from_env = [
            format!("NEXTEST_BIN_EXE_{BIN}"),
            format!("CARGO_BIN_EXE_{BIN}"),
        ]
        .iter()
        .find_map(std::env::var_os)
        .map(PathBuf::from);
        let path = from_env.unwrap_or_else(|| {
            profile_dir().join(format!("{BIN}{}", std::env::consts::EXE_SUFFIX))
        });
        assert!(
            path.is_file(),
            "the binary under test is not at {}: run the tests with `cargo nextest run -p \
             tidegate` or `cargo test -p tidegate`, which build it first",
            path.display()
        );
        path
    })
    .clone()
}

/// Where per-test logs go (kept after the run for inspection).
pub fn log_dir() -> PathBuf {
    let d = target_dir().join("test-logs");
    fs::create_dir_all(&d).unwrap();
    d
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name unique within this machine's run: prefix, process id, counter.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}
