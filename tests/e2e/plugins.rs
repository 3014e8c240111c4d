//! The plugin runtime through real compiled components: each default plugin's decisions,
//! hostile plugins stopped with clear errors while the previous plugin keeps serving, hot
//! reload, and the compile cache.

use std::time::Duration;

use tandem::plugin::{
    ConfChange, EntryBatch, EntryKind, FailureKind, History, Origin, PluginConfig, Plugins, Scope, UserScope,
    Verdict, World,
};

use crate::support::{guest, guest_bytes, install_file, wait_for};

const DAY_MS: u64 = 86_400_000;
const NOW: u64 = 1_800_000_000_000;

fn builtins() -> Plugins {
    Plugins::new(PluginConfig::for_test(None)).unwrap()
}

fn with_settings(world: World, settings: &[(&str, &str)]) -> Plugins {
    let mut config = PluginConfig::for_test(None);
    for (k, v) in settings {
        config.set(world.name(), k, v);
    }
    Plugins::new(config).unwrap()
}

fn change(conf_type: &str) -> ConfChange {
    ConfChange { conf_type: conf_type.into(), scope: Scope::App("search".into()), meta: false }
}

fn filter(plugins: &Plugins, tree: &str, entries: &[(&str, EntryKind)]) -> Vec<Verdict> {
    let mut batch = EntryBatch::new(tree);
    for (path, kind) in entries {
        batch.push(path.as_bytes(), *kind, 10, 0o644);
    }
    plugins.filter(&batch).unwrap()
}

/// The verdict for `x.bak`: the example plugin skips it, the default keeps it.
fn bak_verdict(plugins: &Plugins) -> Verdict {
    filter(plugins, "vault", &[("x.bak", EntryKind::File)])[0]
}

// ---- default whitelist ----

#[test]
fn whitelist_default_includes_the_seed_list_and_nothing_else() {
    let p = builtins();
    for t in [
        "alert_actions",
        "authentication",
        "authorize",
        "datamodels",
        "event_renderers",
        "eventtypes",
        "fields",
        "html",
        "literals",
        "lookups",
        "macros",
        "manager",
        "models",
        "multikv",
        "nav",
        "panels",
        "passwd",
        "passwords",
        "props",
        "quickstart",
        "savedsearches",
        "searchbnf",
        "searchscripts",
        "segmenters",
        "tags",
        "times",
        "transforms",
        "transactiontypes",
        "ui-prefs",
        "user-prefs",
        "views",
        "viewstates",
        "workflow_actions",
    ] {
        assert!(p.replicates(&change(t)).unwrap(), "{t} should replicate");
    }
    for t in ["inputs", "indexes", "outputs", "server", "history", "limits"] {
        assert!(!p.replicates(&change(t)).unwrap(), "{t} should stay local");
    }
}

#[test]
fn whitelist_meta_follows_its_type_in_every_scope() {
    let p = builtins();
    for scope in [
        Scope::System,
        Scope::App("search".into()),
        Scope::User(UserScope { app: "search".into(), user: "admin".into() }),
    ] {
        let meta = |t: &str| ConfChange { conf_type: t.into(), scope: scope.clone(), meta: true };
        assert!(p.replicates(&meta("savedsearches")).unwrap());
        assert!(!p.replicates(&meta("inputs")).unwrap());
    }
}

#[test]
fn whitelist_history_never_replicates_even_when_set_true() {
    let p = with_settings(World::Whitelist, &[("conf_replication_include.history", "true")]);
    assert!(!p.replicates(&change("history")).unwrap());
}

#[test]
fn whitelist_overrides_add_and_remove_types() {
    let p = with_settings(
        World::Whitelist,
        &[("conf_replication_include.inputs", "true"), ("conf_replication_include.props", "false")],
    );
    assert!(p.replicates(&change("inputs")).unwrap());
    assert!(!p.replicates(&change("props")).unwrap());
    assert!(p.replicates(&change("savedsearches")).unwrap());
}

#[test]
fn a_builtin_refusing_its_settings_is_a_clear_startup_error() {
    let mut config = PluginConfig::for_test(None);
    config.set("whitelist", "conf_replication_include.props", "sometimes");
    let e = Plugins::new(config).err().expect("bad settings must fail");
    assert_eq!(e.plugin, "builtin:whitelist");
    assert!(matches!(&e.kind, FailureKind::Configure(m) if m.contains("not a boolean")), "{e}");
}

// ---- default path filter ----

#[test]
fn path_filter_skips_special_and_temporary_files() {
    let p = builtins();
    let got = filter(
        &p,
        "vault",
        &[
            ("docs/report.pdf", EntryKind::File),
            ("docs", EntryKind::Dir),
            ("run/app.sock", EntryKind::Other),
            ("docs/report.pdf.part", EntryKind::File),
            ("docs/.report.swp", EntryKind::File),
            ("docs/.tandem-tmp-1", EntryKind::File),
            ("current", EntryKind::Symlink),
        ],
    );
    use Verdict::*;
    assert_eq!(got, [Keep, Keep, Skip, Skip, Skip, Skip, Keep]);
}

#[test]
fn path_filter_prunes_package_trees_only_when_ignoring_package_updates() {
    let p = builtins();
    assert_eq!(filter(&p, "pip_req", &[("requirements.txt", EntryKind::File)]), [Verdict::Keep]);
    let p = with_settings(World::PathFilter, &[("ignore_package_updates", "true")]);
    assert_eq!(filter(&p, "pip_req", &[("requirements.txt", EntryKind::File)]), [Verdict::Skip]);
    assert_eq!(filter(&p, "rpm_req", &[("sub", EntryKind::Dir)]), [Verdict::Prune]);
    assert_eq!(filter(&p, "vault", &[("requirements.txt", EntryKind::File)]), [Verdict::Keep]);
}

#[test]
fn path_filter_applies_site_globs() {
    let p =
        with_settings(World::PathFilter, &[("exclude", "*.log, cache"), ("exclude.old", "reports/old/**")]);
    let got = filter(
        &p,
        "vault",
        &[
            ("a/b/x.log", EntryKind::File),
            ("a/cache", EntryKind::Dir),
            ("reports/old/2020/x.pdf", EntryKind::File),
            ("reports/new/x.pdf", EntryKind::File),
        ],
    );
    assert_eq!(got, [Verdict::Skip, Verdict::Prune, Verdict::Skip, Verdict::Keep]);
}

#[test]
fn path_filter_handles_non_utf8_names_and_big_batches() {
    let p = builtins();
    let mut batch = EntryBatch::new("vault");
    batch.push(b"caf\xe9.txt", EntryKind::File, 1, 0o644);
    batch.push(b"caf\xe9.tmp", EntryKind::File, 1, 0o644);
    for i in 0..20_000 {
        batch.push(format!("d{}/f{i}.dat", i % 100).as_bytes(), EntryKind::File, i, 0o644);
    }
    let got = p.filter(&batch).unwrap();
    assert_eq!(got.len(), 20_002);
    assert_eq!(&got[..2], [Verdict::Keep, Verdict::Skip]);
    assert!(got[2..].iter().all(|v| *v == Verdict::Keep));
}

// ---- default purge policy ----

fn purge(p: &Plugins, count: u64, ages_ms: &[u64]) -> u64 {
    let oldest = ages_ms.iter().map(|a| NOW - a).collect();
    p.purgeable(&History { count, oldest, now: NOW }).unwrap()
}

#[test]
fn purge_needs_both_limits_exceeded_with_defaults() {
    let p = builtins();
    let old = [2 * DAY_MS; 10];
    assert_eq!(purge(&p, 20_000, &old), 0, "at the count limit: nothing");
    assert_eq!(purge(&p, 20_001, &old), 1, "one over: one");
    assert_eq!(purge(&p, 20_010, &old), 10);
    assert_eq!(purge(&p, 30_000, &[DAY_MS; 5]), 0, "exactly at the age limit: nothing");
    assert_eq!(purge(&p, 30_000, &[DAY_MS + 1; 5]), 5, "just older: all");
    assert_eq!(
        purge(&p, 30_000, &[3 * DAY_MS, 2 * DAY_MS, DAY_MS / 2, 3 * DAY_MS]),
        2,
        "stops at a young one"
    );
}

#[test]
fn purge_limits_come_from_settings() {
    let p = with_settings(World::PurgePolicy, &[("eligible_count", "3"), ("eligible_age", "1s")]);
    assert_eq!(purge(&p, 5, &[5_000, 5_000, 5_000]), 2);
    assert_eq!(purge(&p, 5, &[999, 5_000]), 0);
    assert_eq!(purge(&p, 3, &[5_000]), 0);
}

// ---- hostile plugins ----

/// A folder holding the example plugin (active), then `file` dropped beside it.
fn example_then(file: &str) -> (tempfile::TempDir, Plugins, tandem::plugin::RescanReport) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("example-skip-bak.wasm"), dir.path().join("example.wasm")).unwrap();
    let plugins = Plugins::new(PluginConfig::for_test(Some(dir.path().to_path_buf()))).unwrap();
    assert_eq!(bak_verdict(&plugins), Verdict::Skip, "the example plugin is active");
    std::fs::copy(guest(file), dir.path().join(file)).unwrap();
    let report = plugins.rescan();
    (dir, plugins, report)
}

fn refused_kind(report: &tandem::plugin::RescanReport, file: &str) -> FailureKind {
    assert_eq!(report.refused.len(), 1, "{report:?}");
    let e = &report.refused[0];
    assert_eq!(e.plugin, file, "the error names the plugin");
    e.kind.clone()
}

#[test]
fn an_endless_loop_is_stopped_by_the_time_cap() {
    let (_dir, plugins, report) = example_then("fixture-hostile-loop.wasm");
    assert_eq!(refused_kind(&report, "fixture-hostile-loop.wasm"), FailureKind::Timeout { limit_ms: 50 });
    assert_eq!(bak_verdict(&plugins), Verdict::Skip, "the previous plugin keeps serving");
}

#[test]
fn a_1_gib_allocation_is_stopped_by_the_memory_cap() {
    let (_dir, plugins, report) = example_then("fixture-hostile-alloc.wasm");
    match refused_kind(&report, "fixture-hostile-alloc.wasm") {
        FailureKind::MemoryLimit { wanted_mib, limit_mib } => {
            assert_eq!(limit_mib, 64);
            assert!(wanted_mib >= 1024, "{wanted_mib}");
        }
        other => panic!("expected a memory cap error, got {other}"),
    }
    assert_eq!(bak_verdict(&plugins), Verdict::Skip);
}

#[test]
fn a_trap_is_reported_with_the_plugins_panic_message() {
    let (_dir, plugins, report) = example_then("fixture-hostile-trap.wasm");
    match refused_kind(&report, "fixture-hostile-trap.wasm") {
        FailureKind::Trap(why) => assert!(why.contains("traps on purpose"), "{why}"),
        other => panic!("expected a trap, got {other}"),
    }
    assert_eq!(bak_verdict(&plugins), Verdict::Skip);
}

#[test]
fn a_batch_answer_of_the_wrong_length_is_malformed() {
    let (_dir, plugins, report) = example_then("fixture-hostile-short.wasm");
    match refused_kind(&report, "fixture-hostile-short.wasm") {
        FailureKind::Malformed(why) => assert!(why.contains("1 verdicts for a batch of 2"), "{why}"),
        other => panic!("expected malformed, got {other}"),
    }
    assert_eq!(bak_verdict(&plugins), Verdict::Skip);
}

#[test]
fn a_component_of_another_world_is_refused() {
    let (_dir, plugins, report) = example_then("fixture-not-a-policy.wasm");
    match refused_kind(&report, "fixture-not-a-policy.wasm") {
        FailureKind::UnknownWorld(exports) => assert!(exports.contains("wasi:cli/run"), "{exports}"),
        other => panic!("expected unknown world, got {other}"),
    }
    assert_eq!(bak_verdict(&plugins), Verdict::Skip);
}

#[test]
fn a_plugin_for_another_major_version_is_refused_naming_both() {
    let (_dir, plugins, report) = example_then("fixture-future-major.wasm");
    assert_eq!(
        refused_kind(&report, "fixture-future-major.wasm"),
        FailureKind::IncompatibleVersion { found: "tandem:policy@1.0.0".into(), supported: "0.1.0".into() }
    );
    assert_eq!(bak_verdict(&plugins), Verdict::Skip);
}

#[test]
fn bytes_that_are_not_wasm_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("example-skip-bak.wasm"), dir.path().join("example.wasm")).unwrap();
    std::fs::write(dir.path().join("junk.wasm"), b"#!/bin/sh\necho not wasm\n").unwrap();
    // a core module, not a component
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let plugins = Plugins::new(PluginConfig::for_test(Some(dir.path().to_path_buf()))).unwrap();
    let states: Vec<String> =
        plugins.statuses().into_iter().map(|s| format!("{} {}", s.name, s.state)).collect();
    assert!(states.iter().any(|s| s.starts_with("junk.wasm refused: not a WebAssembly file")), "{states:?}");
    assert!(
        states.iter().any(|s| s.starts_with("core.wasm refused: a core WebAssembly module")),
        "{states:?}"
    );
    assert_eq!(bak_verdict(&plugins), Verdict::Skip);
}

#[test]
fn a_plugin_that_sleeps_is_stopped_not_waited_for() {
    // Sleeping waits inside the host, where the epoch deadline cannot interrupt it.
    let started = std::time::Instant::now();
    let (_dir, plugins, report) = example_then("fixture-hostile-sleep.wasm");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    match refused_kind(&report, "fixture-hostile-sleep.wasm") {
        FailureKind::Trap(why) => assert!(why.contains("may not sleep"), "{why}"),
        other => panic!("expected a trap, got {other}"),
    }
    assert_eq!(bak_verdict(&plugins), Verdict::Skip);
}

#[test]
fn a_plugin_writing_to_stderr_on_every_call_keeps_working() {
    let plugins = builtins();
    plugins
        .install(&guest("fixture-hostile-chatty.wasm"), &guest_bytes("fixture-hostile-chatty.wasm"))
        .unwrap();
    // ~60 bytes a call: far past the 4 KiB kept for error messages.
    for _ in 0..1_000 {
        assert_eq!(bak_verdict(&plugins), Verdict::Keep);
    }
    assert!(plugins.statuses().iter().all(|s| !s.state.starts_with("failed")));
}

#[test]
fn the_sandbox_grants_no_files_environment_or_network() {
    let plugins = builtins();
    let e = plugins.check("snoop.wasm", &guest_bytes("fixture-hostile-snoop.wasm")).unwrap_err();
    match e.kind {
        FailureKind::Refused(seen) => {
            assert_eq!(seen, "fs: denied; dir: denied; env: 0; args: 0; net: denied")
        }
        other => panic!("expected the snoop report, got {other}"),
    }
}

#[test]
fn a_plugin_failing_at_call_time_falls_back_to_the_previous_one() {
    // The "late" fixture passes validation and loops only on paths containing "boom".
    let (_dir, plugins, report) = example_then("fixture-hostile-late.wasm");
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(bak_verdict(&plugins), Verdict::Keep, "the late fixture is active and keeps everything");
    let got = filter(&plugins, "vault", &[("boom.bak", EntryKind::File), ("x.txt", EntryKind::File)]);
    assert_eq!(got, [Verdict::Skip, Verdict::Keep], "answered by the example plugin below it");
    assert_eq!(bak_verdict(&plugins), Verdict::Skip, "the failed plugin stays off");
    let failed: Vec<_> = plugins.statuses().into_iter().filter(|s| s.state.starts_with("failed")).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].name, "fixture-hostile-late.wasm");
    assert!(failed[0].state.contains("timed out"), "{}", failed[0].state);
}

#[test]
fn a_site_plugin_reads_its_own_settings_table_and_the_builtin_its_own() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("example-skip-bak.wasm"), dir.path().join("skip-bak.wasm")).unwrap();
    let mut config = PluginConfig::for_test(Some(dir.path().to_path_buf()));
    config.set("skip-bak", "skip_dir", "scratch");
    config.set("path-filter", "exclude", "*.log");
    let plugins = Plugins::new(config).unwrap();
    let got = filter(&plugins, "vault", &[("a/scratch", EntryKind::Dir), ("a/cache", EntryKind::Dir)]);
    assert_eq!(got, [Verdict::Prune, Verdict::Keep], "the site plugin got skip_dir = scratch");
    // Removing the site plugin leaves the built-in, configured with its own table.
    std::fs::remove_file(dir.path().join("skip-bak.wasm")).unwrap();
    plugins.rescan();
    assert_eq!(filter(&plugins, "vault", &[("x.log", EntryKind::File)]), [Verdict::Skip]);
}

// ---- hot reload and cache ----

#[test]
fn hot_reload_swaps_a_new_plugin_within_a_second_and_keeps_it_over_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = Plugins::new(PluginConfig::for_test(Some(dir.path().to_path_buf()))).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watcher = plugins.spawn_watcher(shutdown.clone()).unwrap();
    assert_eq!(bak_verdict(&plugins), Verdict::Keep, "built-in default");

    let target = dir.path().join("policy.wasm");
    install_file(&guest_bytes("example-skip-bak.wasm"), &target);
    let (_, took) =
        wait_for(Duration::from_secs(5), || (bak_verdict(&plugins) == Verdict::Skip).then_some(()))
            .expect("the new plugin was never swapped in");
    assert!(took < Duration::from_secs(1), "swap took {took:?}");

    // Replace it with a broken file: refused, and decisions do not change.
    install_file(b"\0asm garbage", &target);
    let refused = wait_for(Duration::from_secs(5), || {
        plugins.statuses().into_iter().find(|s| s.name == "policy.wasm" && s.state.starts_with("refused"))
    });
    assert!(refused.is_some(), "the broken file was not noticed");
    assert_eq!(bak_verdict(&plugins), Verdict::Skip, "the old plugin stays");

    // Removing the file unloads it: back to the built-in.
    std::fs::remove_file(&target).unwrap();
    wait_for(Duration::from_secs(5), || (bak_verdict(&plugins) == Verdict::Keep).then_some(()))
        .expect("removing the file did not unload the plugin");
    shutdown.cancel();
    watcher.join().unwrap();
}

#[test]
fn a_restart_loads_compiled_plugins_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let config = PluginConfig { cache_dir: Some(cache.path().to_path_buf()), ..PluginConfig::for_test(None) };
    let first = Plugins::new(config.clone()).unwrap();
    assert!(World::ALL.iter().all(|w| first.origin(*w) == Origin::Compiled));
    drop(first);
    let second = Plugins::new(config).unwrap();
    assert!(World::ALL.iter().all(|w| second.origin(*w) == Origin::Cache));
    assert_eq!(bak_verdict(&second), Verdict::Keep, "the cached default still decides");
}

#[test]
fn a_corrupt_cache_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let config = PluginConfig { cache_dir: Some(cache.path().to_path_buf()), ..PluginConfig::for_test(None) };
    drop(Plugins::new(config.clone()).unwrap());
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not an artifact").unwrap();
    }
    let plugins = Plugins::new(config).unwrap();
    assert!(World::ALL.iter().all(|w| plugins.origin(*w) == Origin::Compiled));
    assert!(plugins.replicates(&change("props")).unwrap());
}

/// Threads spinning on this thread's CPU, with this thread pinned there: while they live,
/// everything this thread runs takes many times its CPU time in wall time.
struct Hogs {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    fn on_this_threads_cpu(n: usize) -> Hogs {
        // SAFETY: sched_getcpu and sched_setaffinity on the calling thread with a valid set.
        let cpu = unsafe { libc::sched_getcpu() }.max(0) as usize;
        let pin = move || unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
        };
        pin();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    pin();
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
            })
            .collect();
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The time cap counts the call's own CPU time, not the wall time a loaded machine adds: a
/// plugin doing a fixed piece of work per call, well inside its cap, loads and answers while
/// sixteen busy threads share its core, though each call then takes longer than the cap on the
/// clock. (The checker saw a daemon refuse to start, its own built-in plugins timing out,
/// beside busy neighbours.)
#[test]
fn a_loaded_machine_does_not_trip_the_time_cap() {
    const CAP_MS: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    let mut config = PluginConfig::for_test(Some(dir.path().to_path_buf()));
    config.call_timeout_ms = CAP_MS;
    let plugins = Plugins::new(config).unwrap();
    let timed = |plugins: &Plugins| {
        let started = std::time::Instant::now();
        let verdict = bak_verdict(plugins);
        (verdict, started.elapsed())
    };

    let hogs = Hogs::on_this_threads_cpu(24);
    std::fs::copy(guest("fixture-hostile-busy.wasm"), dir.path().join("busy.wasm")).unwrap();
    let report = plugins.rescan();
    let (verdict, loaded) = timed(&plugins);
    drop(hogs);
    let (_, alone) = timed(&plugins);
    assert!(report.refused.is_empty(), "refused under load: {report:?}");
    assert_eq!(verdict, Verdict::Keep, "the busy plugin answers");
    assert!(plugins.statuses().iter().all(|s| !s.state.starts_with("failed")), "{:?}", plugins.statuses());
    // The premises: alone, the work is well inside the cap; loaded, the call outlasts it.
    assert!(alone < Duration::from_millis(CAP_MS / 2), "the work alone took {alone:?}");
    assert!(loaded > Duration::from_millis(CAP_MS), "loaded, a call took only {loaded:?} (alone {alone:?})");
}
