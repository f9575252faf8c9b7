//! Carrying out `enable` plans, and `undo`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Applier, ApplyError};
use crate::enable::{EnablePlan, Inspection, PlannedCommand};

/// Where the output of long commands is kept.
pub const LOG_DIR: &str = "var/lib/passthru/logs";

/// How long a regenerator may run (an initramfs rebuild of every kernel can be slow).
const LONG_COMMAND_LIMIT: Duration = Duration::from_secs(3600);

impl Applier {
    /// Journals, then writes, every file of the plan (no commands).
    pub fn apply_files(&self, plan: &EnablePlan) -> Result<(), ApplyError> {
        let mut paths: Vec<PathBuf> = plan.files.iter().map(|f| f.path.clone()).collect();
        paths.extend(plan.snapshots.iter().cloned());
        self.journal_files(&paths, &plan.enabled.regenerate)?;
        for f in &plan.files {
            match &f.after {
                Some(text) => {
                    self.write_config(&f.path, text.as_bytes())?;
                    if let (Some(mode), None) = (f.mode, &f.before) {
                        use std::os::unix::fs::PermissionsExt;
                        let real = self.root().path(&f.path);
                        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(mode))
                            .map_err(|source| ApplyError::Journal { path: real, source })?;
                    }
                }
                None => self.remove(&f.path)?,
            }
        }
        Ok(())
    }

    /// Carries out an enable plan: files, commands, then a look inside the
    /// regenerated initramfs.
    pub fn enable(
        &self,
        plan: &EnablePlan,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), ApplyError> {
        self.apply_files(plan)?;
        for c in &plan.commands {
            self.run_logged(c, progress)?;
        }
        for i in &plan.inspections {
            self.inspect(i, progress)?;
        }
        Ok(())
    }

    /// Restores every file `enable` changed and regenerates the boot files from them.
    pub fn undo(&self, progress: &mut dyn FnMut(&str)) -> Result<bool, ApplyError> {
        if self.journal()?.is_none() {
            return Ok(false);
        }
        progress("restoring the files enable changed");
        let Some(journal) = self.roll_back_journal()? else {
            return Ok(false);
        };
        for c in &journal.regenerate {
            self.run_logged(c, progress)?;
        }
        // The regenerators' logs were only kept for an error message: with them gone,
        // the directories passthru created go too.
        let _ = std::fs::remove_dir_all(self.root().path(LOG_DIR));
        self.remove_created_dirs(&journal);
        Ok(true)
    }

    /// Runs a (possibly long) command, reporting progress and keeping its output in
    /// `/var/lib/passthru/logs/` for the error message.
    pub fn run_logged(
        &self,
        c: &PlannedCommand,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), ApplyError> {
        let line = c.argv.join(" ");
        let name = Path::new(c.argv.first().map_or("command", String::as_str))
            .file_name()
            .map_or("command".into(), |n| n.to_string_lossy().into_owned());
        let log_rel = PathBuf::from(LOG_DIR).join(format!("{name}.log"));
        let log_path = self.root().path(&log_rel);
        let fail = |message: String| ApplyError::Command {
            command: line.clone(),
            message,
        };
        std::fs::create_dir_all(self.root().path(LOG_DIR)).map_err(|e| fail(e.to_string()))?;
        let log = std::fs::File::create(&log_path).map_err(|e| fail(e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| fail(e.to_string()))?;
        progress(&format!("running `{line}` ({})", c.why));
        let started = Instant::now();
        let mut child = Command::new(&c.argv[0])
            .args(&c.argv[1..])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| fail(format!("cannot start it: {e}")))?;
        let mut next_note = Duration::from_secs(15);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) => return Err(fail(e.to_string())),
            }
            let elapsed = started.elapsed();
            if elapsed > LONG_COMMAND_LIMIT {
                let _ = child.kill();
                return Err(fail(format!(
                    "still running after {} s: stopped",
                    elapsed.as_secs()
                )));
            }
            if elapsed >= next_note {
                progress(&format!("`{name}` still running ({} s)", elapsed.as_secs()));
                next_note += Duration::from_secs(15);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if status.success() {
            progress(&format!(
                "`{name}` done in {} s",
                started.elapsed().as_secs()
            ));
            return Ok(());
        }
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = output.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(fail(format!(
            "{status}; its output (in {}) ends with:\n{}",
            log_path.display(),
            tail.join("\n")
        )))
    }

    /// Lists an initramfs and fails loudly when something passthru needs is missing.
    pub fn inspect(
        &self,
        i: &Inspection,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), ApplyError> {
        let line = i.argv.join(" ");
        progress(&format!("looking inside the initramfs (`{line}`)"));
        let out = Command::new(&i.argv[0])
            .args(&i.argv[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ApplyError::Command {
                command: line.clone(),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(ApplyError::Command {
                command: line,
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let listing = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<&String> = i
            .must_contain
            .iter()
            .filter(|m| !listing.contains(m.as_str()))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ApplyError::Verify(format!(
                "the regenerated initramfs lacks {} (`{line}`): vfio-pci would not take the devices at boot. \
                 `passthru undo` restores the previous setup.",
                missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
            )))
        }
    }
}
