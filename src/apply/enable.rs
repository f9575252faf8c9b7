//! Carrying out `enable` plans, and `undo`.
//!
//! A regenerator (`update-initramfs`, `dracut`, `update-grub`, …) runs in a process
//! group of its own, recorded in [`RUNNING`] while it runs. When passthru is killed
//! (`kill -9`, a lost SSH session) the regenerator lives on, orphaned, still writing
//! the boot files of the interrupted setup; the next `enable` or `undo` finds the
//! record, stops that process group, and only then restores or rewrites anything, so
//! two generators never race on the same image.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::journal::{EnablePhase, Journal, UndoPhase};
use super::{Applier, ApplyError};
use crate::plan::enable::{EnablePlan, Inspection, PlannedCommand};

/// Where the output of long commands is kept.
pub const LOG_DIR: &str = "var/lib/passthru/logs";

/// The record of the regenerator running now (see the module's documentation).
pub const RUNNING: &str = "var/lib/passthru/logs/running.json";

/// How long a stopped regenerator may take to exit after SIGTERM, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A regenerator that was started, as [`RUNNING`] records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Running {
    /// Its command line.
    pub argv: Vec<String>,
    /// Its pid, which is also its process group's id.
    pub pid: i32,
    /// The kernel's boot id when it started (a pid means nothing after a reboot).
    pub boot_id: Option<String>,
    /// Its start time (field 22 of `/proc/PID/stat`), against reuse of the pid.
    pub start: Option<u64>,
}

/// The process group, state and start time of a process, from the text of its
/// `/proc/PID/stat`. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself: the fields after it are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<(i32, char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5), …, starttime (22).
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((pgrp, state, start))
}

/// How long a regenerator may run (an initramfs rebuild of every kernel can be slow).
const LONG_COMMAND_LIMIT: Duration = Duration::from_secs(3600);

impl Applier {
    /// Journals, then writes, every file of the plan (no commands).
    pub fn apply_files(&self, plan: &EnablePlan) -> Result<(), ApplyError> {
        self.check_unchanged(plan)?;
        self.journal_plan(plan)?;
        self.write_files(plan, false)?;
        self.write_files(plan, true)
    }

    /// Fails, before anything changes, when a file the plan edits is no longer what
    /// the plan was made from: an edit made while `enable` waited at its prompt would
    /// otherwise be silently replaced.
    pub fn check_unchanged(&self, plan: &EnablePlan) -> Result<(), ApplyError> {
        for f in &plan.files {
            let target = self.write_target(&f.path)?;
            let real = self.root().path(&target);
            let now = match std::fs::read(&real) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => return Err(ApplyError::Journal { path: real, source }),
            };
            if now.as_deref() != f.before.as_deref().map(str::as_bytes) {
                return Err(ApplyError::Changed {
                    path: Path::new("/").join(&f.path),
                });
            }
        }
        Ok(())
    }

    /// Journals every file the plan writes and every file its commands may change.
    fn journal_plan(&self, plan: &EnablePlan) -> Result<Journal, ApplyError> {
        let mut paths: Vec<PathBuf> = plan.files.iter().map(|f| f.path.clone()).collect();
        paths.extend(plan.snapshots.iter().cloned());
        self.journal_files(&paths, &plan.enabled.regenerate)
    }

    /// Writes the plan's files that go before the commands, or those that go after.
    fn write_files(&self, plan: &EnablePlan, after_commands: bool) -> Result<(), ApplyError> {
        for f in plan
            .files
            .iter()
            .filter(|f| f.after_commands == after_commands)
        {
            match &f.after {
                Some(text) => {
                    self.write_config(&f.path, text.as_bytes())?;
                    if let (Some(mode), None) = (f.mode, &f.before) {
                        use std::os::unix::fs::PermissionsExt;
                        let real = self.root().path(self.write_target(&f.path)?);
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
        self.check_unchanged(plan)?;
        self.stop_interrupted(progress)?;
        let mut journal = self.journal_plan(plan)?;
        let regenerates = !plan.commands.is_empty() || !plan.inspections.is_empty();
        if regenerates {
            // Marked before the files change, so that whatever stops the commands (a
            // failure, a kill) leaves the next `enable` a reason to run them again.
            journal.enable = Some(EnablePhase::Regenerating);
            self.save_journal(&mut journal)?;
        }
        self.write_files(plan, false)?;
        for c in &plan.commands {
            self.run_logged(c, progress)?;
        }
        self.write_files(plan, true)?;
        for i in &plan.inspections {
            self.inspect(i, progress)?;
        }
        if regenerates {
            if let Some(mut journal) = self.journal()? {
                journal.enable = None;
                self.save_journal(&mut journal)?;
            }
        }
        Ok(())
    }

    /// What `undo` does before it reads the journal: stops a regenerator an
    /// interrupted run left behind, and removes a journal directory a kill left
    /// without manifest. Only then is "nothing to undo" a true answer.
    pub fn prepare_undo(&self, progress: &mut dyn FnMut(&str)) -> Result<(), ApplyError> {
        self.stop_interrupted(progress)?;
        self.clean_unfinished_journal()
    }

    /// Restores every file `enable` changed and regenerates the boot files from them,
    /// in two phases (see [`super::journal`]): the journal is kept, marked, until
    /// every regenerator succeeded. Returns whether there was anything to undo.
    pub fn undo(&self, progress: &mut dyn FnMut(&str)) -> Result<bool, ApplyError> {
        self.prepare_undo(progress)?;
        let Some(mut journal) = self.journal()? else {
            return Ok(false);
        };
        if journal.undo.is_none() {
            progress("restoring the files enable changed");
            self.restore_files(&journal)?;
            journal.undo = Some(UndoPhase::Regenerating);
            self.save_journal(&mut journal)?;
        } else {
            progress("the files were restored by an interrupted undo: regenerating the boot files from them");
        }
        for c in &journal.regenerate {
            self.run_logged(c, progress)?;
        }
        // The regenerators' logs were only kept for an error message: with them gone,
        // the directories passthru created go too.
        let _ = std::fs::remove_dir_all(self.root().path(LOG_DIR));
        self.forget_journal(&journal)?;
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
        // The child is a `/bin/sh` that waits for a line on this pipe (its descriptor
        // 3), written once the child's record is in RUNNING, and only then becomes
        // the command (`exec`, same pid): killed in between, passthru never writes
        // it, the shell reads end-of-file and exits, and no regenerator runs that the
        // next run could not find and stop.
        let (go_read, go_write) =
            super::sys::pipe_cloexec().map_err(|e| fail(format!("cannot create a pipe: {e}")))?;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg("read -r _ <&3 && exec \"$@\" 3<&-")
            .arg("sh")
            .args(&c.argv)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        // The copy (descriptor 3) is not close-on-exec; the original and the write
        // end are.
        super::sys::pass_as_fd3(&mut command, go_read.as_raw_fd());
        let spawned = command.spawn();
        // The parent's copy of the read end is no longer needed.
        drop(go_read);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                drop(go_write);
                return Err(fail(format!("cannot start it: {e}")));
            }
        };
        let record = self.running_record(c, &child);
        if let Ok(json) = serde_json::to_vec_pretty(&record) {
            // Best effort: without the record an interrupted run is only not stopped.
            let _ = self.write_atomic(Path::new(RUNNING), &json);
        }
        // One line to the descriptor this function created, then closed. A failed
        // write leaves the shell reading end-of-file: it exits, and the command
        // fails below.
        let _ = std::fs::File::from(go_write).write(b"\n");
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
        let _ = self.remove(Path::new(RUNNING));
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

    /// What [`RUNNING`] records for a child just started.
    fn running_record(&self, c: &PlannedCommand, child: &std::process::Child) -> Running {
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        Running {
            argv: c.argv.clone(),
            pid,
            boot_id: self.boot_id(),
            start: self.stat(pid).map(|(_, _, start)| start),
        }
    }

    fn boot_id(&self) -> Option<String> {
        self.root()
            .read_optional("proc/sys/kernel/random/boot_id")
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
    }

    fn stat(&self, pid: i32) -> Option<(i32, char, u64)> {
        let text = self
            .root()
            .read_optional(format!("proc/{pid}/stat"))
            .ok()??;
        parse_stat(&text)
    }

    /// Whether a live (not zombie) process of the process group `pgid` exists.
    fn group_alive(&self, pgid: i32) -> bool {
        self.root()
            .list_dir_optional("proc")
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.parse::<i32>().ok())
            .filter_map(|pid| self.stat(pid))
            .any(|(pgrp, state, _)| pgrp == pgid && !matches!(state, 'Z' | 'X'))
    }

    /// Whether the recorded regenerator's process group still runs: same boot, and
    /// its leader (if still there) is the process that was started, not a new one
    /// with a reused pid.
    fn still_running(&self, r: &Running) -> bool {
        if r.pid <= 1 || r.boot_id.is_none() || r.boot_id != self.boot_id() {
            return false;
        }
        if let Some((_, _, start)) = self.stat(r.pid) {
            if r.start.is_some_and(|s| s != start) {
                return false;
            }
        }
        self.group_alive(r.pid)
    }

    /// Stops a regenerator that an interrupted passthru left running (see the
    /// module's documentation): SIGTERM to its process group, SIGKILL after
    /// `STOP_GRACE` (30 seconds). Its output is replaced anyway by the regeneration
    /// that follows.
    pub fn stop_interrupted(&self, progress: &mut dyn FnMut(&str)) -> Result<(), ApplyError> {
        let Ok(Some(text)) = self.root().read_optional(RUNNING) else {
            return Ok(());
        };
        let Ok(r) = serde_json::from_str::<Running>(&text) else {
            return self.remove(Path::new(RUNNING));
        };
        if self.root().is_system() && self.still_running(&r) {
            progress(&format!(
                "`{}` (process {}) from an interrupted run is still running: stopping it",
                r.argv.join(" "),
                r.pid
            ));
            let mut deadline = Instant::now() + STOP_GRACE;
            let mut signal = libc::SIGTERM;
            loop {
                // A negative pid names the process group the regenerator was started
                // in; one already gone is what the loop waits for.
                let _ = super::sys::send_signal(-r.pid, signal);
                std::thread::sleep(Duration::from_millis(200));
                if !self.group_alive(r.pid) {
                    break;
                }
                if Instant::now() >= deadline {
                    if signal == libc::SIGKILL {
                        return Err(ApplyError::Command {
                            command: r.argv.join(" "),
                            message: format!(
                                "process group {} of an interrupted run does not exit",
                                r.pid
                            ),
                        });
                    }
                    signal = libc::SIGKILL;
                    deadline = Instant::now() + Duration::from_secs(5);
                }
            }
        }
        self.remove(Path::new(RUNNING))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_name() {
        // /proc/PID/stat of a `sh` on a 6.x kernel (this build machine).
        let sh = "27320 (sh) S 27317 27317 24829 0 -1 4194304 90 0 1 0 0 0 0 0 20 0 1 0 999916 2654208 409 18446744073709551615 94832641703936 94832641780665 140724846051152 0 0 0 0 0 65538 1 0 0 17 1 0 0 0 0 0 94832641809968 94832641815104 94832668438528 140724846058012 140724846058036 140724846058036 140724846059500 0\n";
        assert_eq!(parse_stat(sh), Some((27317, 'S', 999_916)));
        // A command name with a space and a parenthesis of its own.
        let odd = sh.replace("(sh)", "(a b) c)").replace(" S ", " Z ");
        assert_eq!(parse_stat(&odd), Some((27317, 'Z', 999_916)));
        assert_eq!(parse_stat("27320 (sh) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }
}
