//! Scale-out for real: three `holdfast serve` processes through one PgBouncer (transaction
//! mode) to one cluster. Assemblies spread across the instances; one instance is killed
//! (SIGKILL) in the middle of its assemblies and PgBouncer is restarted while the others work.
//! Every assembly must still end exactly once: the killed instance's tasks rescued by the
//! others, none stuck, no doubled transcript line, every API answering again.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use holdfast_service::harness::http_client::fetch;
use holdfast_service::harness::prom::sum;
use holdfast_tempdb::{Database, PgBouncerOptions, TempPgBouncer};
use holdfast_testkit::{cluster, eventually_blocking as eventually};
use serde_json::json;

const EPISODES: usize = 12;
const SEGMENTS: usize = 20;

/// One `holdfast serve` process.
struct Instance {
    child: Child,
    addr: SocketAddr,
}

impl Instance {
    fn start(bouncer_url: &str, direct_url: &str, log: &Path) -> Instance {
        let log_file = std::fs::File::create(log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .arg("serve")
            .env("DATABASE_URL", bouncer_url)
            .env("DB_POOLER", "transaction")
            // Only the notifications take the direct route; everything else goes through
            // PgBouncer.
            .env("TASKS_LISTEN_URL", direct_url)
            .env("LISTEN", "127.0.0.1:0")
            .env("DB_POOL_SIZE", "2")
            .env("DB_MAX_OVERFLOW", "2")
            .env("ASSEMBLY_WORKERS", "2")
            .env("ASSEMBLY_STEP_MS", "100")
            .env("TASK_LEASE_MS", "1500")
            .env("TASK_POLL_MS", "100")
            .env("TASK_SHUTDOWN_GRACE_MS", "1000")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("run holdfast serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}; log:\n{}", tail(log)));
        Instance { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn sql(db: &Database, query: &str) -> String {
    cluster().psql(&db.name, query).expect("psql")
}

/// The pids of the processes whose workers hold running tasks now, with those tasks.
fn running_by_pid(db: &Database, pids: &[u32]) -> Vec<(u32, i64)> {
    let rows = sql(
        db,
        "SELECT id, lease_owner FROM holdfast.tasks WHERE state = 'running' AND lease_owner IS NOT NULL",
    );
    rows.lines()
        .filter_map(|line| {
            let (id, owner) = line.split_once('|')?;
            let pid = pids.iter().find(|pid| owner.contains(&format!("-{pid}-")))?;
            Some((*pid, id.parse().ok()?))
        })
        .collect()
}

#[test]
fn three_instances_behind_pgbouncer_survive_a_killed_instance_and_a_pgbouncer_restart() {
    let db = cluster().create_database().expect("database");
    let bouncer = TempPgBouncer::start(cluster(), PgBouncerOptions::default().default_pool_size(12))
        .expect("pgbouncer");
    let logs = tempfile::tempdir().expect("log dir");
    let mut instances: Vec<Instance> = (0..3)
        .map(|i| {
            Instance::start(
                &bouncer.url_for(&db.name),
                &db.url,
                &logs.path().join(format!("instance-{i}.log")),
            )
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let call = |addr: SocketAddr, method: &str, path: &str, body: Option<serde_json::Value>| {
        runtime
            .block_on(fetch(addr, method, path, body.as_ref(), Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e:?}"))
    };

    // Episodes created on one instance, their assemblies started on another.
    let mut episodes = Vec::new();
    for i in 0..EPISODES {
        let segments: Vec<_> = (0..SEGMENTS)
            .map(|s| json!({ "text": format!("segment {s}"), "duration_ms": 1000 }))
            .collect();
        let created = call(
            instances[i % 3].addr,
            "POST",
            "/api/episodes",
            Some(json!({ "title": format!("episode {i}"), "segments": segments })),
        );
        assert_eq!(created.status, 201, "{}", created.text);
        let id = serde_json::from_str::<serde_json::Value>(&created.text).expect("json")["id"]
            .as_i64()
            .expect("id");
        let started = call(
            instances[(i + 1) % 3].addr,
            "POST",
            &format!("/api/episodes/{id}/assemble"),
            None,
        );
        assert_eq!(started.status, 202, "{}", started.text);
        episodes.push(id);
    }

    // The assemblies spread: every instance is seen running some.
    let pids: Vec<u32> = instances.iter().map(Instance::pid).collect();
    let mut seen = BTreeSet::new();
    eventually("every instance runs assemblies", || {
        seen.extend(running_by_pid(&db, &pids).into_iter().map(|(pid, _)| pid));
        seen.len() == 3
    });

    // Kill an instance in the middle of its assemblies.
    let mut victim_tasks = Vec::new();
    let mut victim = 0;
    eventually("an instance holds running assemblies", || {
        let running = running_by_pid(&db, &pids);
        if let Some((pid, _)) = running.first() {
            victim = instances.iter().position(|i| i.pid() == *pid).unwrap_or(0);
            victim_tasks = running
                .iter()
                .filter(|(p, _)| p == pid)
                .map(|(_, id)| *id)
                .collect();
        }
        !victim_tasks.is_empty()
    });
    let mut killed = instances.remove(victim);
    killed.child.kill().expect("SIGKILL");
    killed.child.wait().expect("reap");

    // And restart PgBouncer while the others work: every client connection is cut.
    bouncer.restart().expect("restart pgbouncer");

    let ids = episodes
        .iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    eventually("every assembly settles", || {
        sql(
            &db,
            "SELECT count(*) FROM holdfast.tasks WHERE state NOT IN ('succeeded', 'failed', 'cancelled')",
        ) == "0"
    });
    let logs_of_survivors = || {
        instances
            .iter()
            .enumerate()
            .map(|(i, _)| tail(&logs.path().join(format!("instance-{i}.log"))))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert_eq!(
        sql(&db, "SELECT state, count(*) FROM holdfast.tasks GROUP BY state"),
        format!("succeeded|{EPISODES}"),
        "every task succeeded; logs:\n{}",
        logs_of_survivors()
    );
    // Each episode assembled once, by its own task, with every transcript line once.
    assert_eq!(
        sql(
            &db,
            &format!(
                "SELECT count(*) FROM episodes WHERE id IN ({ids}) AND status = 'assembled'
                   AND output_path = 'episodes/' || id || '/assembled-' || task_id || '.mp3'"
            )
        ),
        EPISODES.to_string()
    );
    assert_eq!(
        sql(
            &db,
            &format!("SELECT count(*), count(DISTINCT (episode_id, line_no)) FROM transcript_lines WHERE episode_id IN ({ids})")
        ),
        format!("{n}|{n}", n = EPISODES * SEGMENTS)
    );
    // The killed instance's assemblies were rescued and run again by the others.
    let victim_ids = victim_tasks
        .iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        sql(
            &db,
            &format!("SELECT count(*) FROM holdfast.tasks WHERE id IN ({victim_ids}) AND state = 'succeeded' AND attempt >= 2")
        ),
        victim_tasks.len().to_string(),
        "tasks {victim_ids} of the killed instance were rescued"
    );
    // What the survivors went through (shown with --nocapture).
    eprintln!("{}", logs_of_survivors());
    // The survivors answer again after the PgBouncer restart, and nothing is left open.
    for instance in &instances {
        for id in &episodes {
            let reply = call(instance.addr, "GET", &format!("/api/episodes/{id}"), None);
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
    }
    // They recovered from the restart rather than missing it: their pools saw connections
    // closed under them and replaced them.
    for instance in &instances {
        let metrics = call(instance.addr, "GET", "/metrics", None).text;
        let broken = sum(
            &metrics,
            "holdfast_pool_connections_closed_total",
            &[("reason", "broken")],
        );
        assert!(
            broken > 0.0,
            "no connection of {} was seen closed:\n{metrics}",
            instance.addr
        );
    }
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        ),
        "0"
    );
}
