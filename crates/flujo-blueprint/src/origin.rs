//! A run's origin: where its blueprint came from and the files besides the stored definition that running
//! it depends on (`skills.yaml` catalogs, the programs and scripts their command skills run, prompt files),
//! each with a blake3 content hash. `flujo run` stores it with the run; `flujo resume RUN_ID` reads the
//! run's skills from the recorded catalogs — from any folder — and refuses when one of them (or a program
//! they run) changed since the run started, as it refuses a changed pipeline (`pipeline_mismatch`).
//! Prompt texts are part of the stored definition, so a changed prompt file is only worth a note.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use flujo_core::{OriginFile, OriginRole, RunOrigin};

use crate::catalog::SkillCatalog;
use crate::diagnostic::Diagnostic;
use crate::load::Loaded;

/// Files larger than this are hashed by their first bytes only (a script this large is not a script).
const MAX_HASHED_BYTES: u64 = 64 << 20;

/// blake3 of a file's content (hex), or `None` when it cannot be read as a regular file.
pub fn hash_file(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let mut hasher = blake3::Hasher::new();
    let mut reader = file.take(MAX_HASHED_BYTES);
    let mut buf = [0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(_) => return None,
        }
    }
    Some(hasher.finalize().to_hex().to_string())
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
        }
    })
}

/// The origin of a run of `loaded`, read from `blueprint`: its folder and the hashes of the files it uses.
pub fn origin_of(loaded: &Loaded, blueprint: &Path) -> RunOrigin {
    let mut files: Vec<OriginFile> = Vec::new();
    let mut seen: BTreeSet<(u8, PathBuf)> = BTreeSet::new();
    let mut add = |role: OriginRole, path: PathBuf, files: &mut Vec<OriginFile>| {
        let path = absolute(&path);
        if !seen.insert((role as u8, path.clone())) {
            return;
        }
        if let Some(blake3) = hash_file(&path) {
            files.push(OriginFile { role, path: path.to_string_lossy().into_owned(), blake3 });
        }
    };
    for skill in loaded.catalog.skills.values() {
        add(OriginRole::SkillsCatalog, skill.file.clone(), &mut files);
        // A command's program or script argument that is a file in the skill's folder (`./eff.sh`,
        // `python3 tool.py`); programs found on PATH or given absolute are the system's, not the project's.
        for arg in skill.command.iter().flatten() {
            let p = Path::new(arg);
            if p.is_absolute() || arg.starts_with('-') {
                continue;
            }
            let candidate = skill.dir.join(p);
            if candidate.is_file() {
                add(OriginRole::SkillProgram, candidate, &mut files);
            }
        }
    }
    for agent in loaded.agents.values() {
        if let Some(f) = &agent.system_prompt_file {
            add(OriginRole::Prompt, f.clone(), &mut files);
        }
    }
    RunOrigin {
        blueprint: absolute(blueprint).to_string_lossy().into_owned(),
        base_dir: absolute(&loaded.base_dir).to_string_lossy().into_owned(),
        files,
    }
}

/// A recorded file that is no longer what the run started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    pub role: OriginRole,
    pub path: String,
    /// `true` when the file is gone (or unreadable), `false` when its content changed.
    pub missing: bool,
}

impl std::fmt::Display for ChangedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.role {
            OriginRole::SkillsCatalog => "skills catalog",
            OriginRole::SkillProgram => "skill program",
            OriginRole::Prompt => "prompt file",
        };
        let how = if self.missing { "is missing" } else { "changed since the run started" };
        write!(f, "{what} {} {how}", self.path)
    }
}

/// The recorded files whose content is no longer the recorded one.
pub fn changed_files(origin: &RunOrigin) -> Vec<ChangedFile> {
    origin
        .files
        .iter()
        .filter_map(|f| match hash_file(Path::new(&f.path)) {
            Some(h) if h == f.blake3 => None,
            got => Some(ChangedFile { role: f.role, path: f.path.clone(), missing: got.is_none() }),
        })
        .collect()
}

/// The skills of the catalogs a run recorded, read from their recorded places (wherever the caller is).
pub fn catalog_of(origin: &RunOrigin) -> (SkillCatalog, Vec<Diagnostic>) {
    let mut catalog = SkillCatalog::default();
    let mut diags = Vec::new();
    let mut dirs = BTreeSet::new();
    for f in origin.files.iter().filter(|f| f.role == OriginRole::SkillsCatalog) {
        if let Some(dir) = Path::new(&f.path).parent() {
            if dirs.insert(dir.to_path_buf()) {
                let (c, d) = SkillCatalog::load_dir(dir);
                catalog.merge(&c);
                diags.extend(d);
            }
        }
    }
    (catalog, diags)
}
