// One measurement of a node task queue for `holdfast-bench task-peers`: fills the queue
// with no-op jobs, runs the peer's workers until every job is done, and prints
// {"rate": jobs per second} (from the workers' start to the last job done).
//
//   node run.mjs <graphile|graphile-batched|pg-boss> <postgres url> <workers> <jobs>
import { Logger, run, runMigrations } from "graphile-worker";
import PgBoss from "pg-boss";
import pg from "pg";

const [peer, url, workersText, jobsText] = process.argv.slice(2);
const workers = Number(workersText);
const jobs = Number(jobsText);
// Errors only: a log line per job would measure the terminal.
const logger = new Logger(() => (level, message) => {
  if (level === "error") console.error(message);
});

async function until(client, sql) {
  for (;;) {
    const { rows } = await client.query(sql);
    if (Number(rows[0].n) === 0) return;
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function graphile(client, batched) {
  await runMigrations({ connectionString: url, logger });
  await client.query("DELETE FROM graphile_worker._private_jobs");
  await client.query(
    `SELECT graphile_worker.add_jobs(array(
       SELECT json_populate_record(null::graphile_worker.job_spec,
                                   json_build_object('identifier', 'noop', 'payload', '{}'::json))
       FROM generate_series(1, $1)))`,
    [jobs],
  );
  await client.query("VACUUM ANALYZE graphile_worker._private_jobs");
  // Its documented batching: a local queue of fetched jobs, completions batched.
  const preset = batched
    ? { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
    : undefined;
  const started = performance.now();
  const runner = await run({
    connectionString: url,
    concurrency: workers,
    maxPoolSize: workers + 2,
    noHandleSignals: true,
    pollInterval: 50,
    logger,
    preset,
    taskList: { noop: async () => {} },
  });
  await until(client, "SELECT count(*) AS n FROM graphile_worker._private_jobs");
  const seconds = (performance.now() - started) / 1000;
  await runner.stop();
  return jobs / seconds;
}

async function pgBoss(client) {
  const boss = new PgBoss({ connectionString: url, max: workers + 2 });
  boss.on("error", (e) => console.error(e));
  await boss.start();
  await boss.deleteQueue("noop").catch(() => {});
  await boss.createQueue("noop");
  const batch = Array.from({ length: jobs }, () => ({ name: "noop", data: {} }));
  for (let i = 0; i < batch.length; i += 5000) await boss.insert(batch.slice(i, i + 5000));
  const started = performance.now();
  // One polling worker per slot, each fetching a batch of 500 (as graphile's local queue):
  // pg-boss waits its polling interval, at least 0.5 s, between fetches, so batches are how
  // it is run for throughput.
  for (let i = 0; i < workers; i++) {
    await boss.work("noop", { batchSize: 500, pollingIntervalSeconds: 0.5 }, async () => {});
  }
  await until(client, "SELECT count(*) AS n FROM pgboss.job WHERE name = 'noop' AND state <> 'completed'");
  const seconds = (performance.now() - started) / 1000;
  await boss.stop({ graceful: false, wait: true });
  return jobs / seconds;
}

const client = new pg.Client({ connectionString: url });
await client.connect();
let rate;
if (peer === "graphile") rate = await graphile(client, false);
else if (peer === "graphile-batched") rate = await graphile(client, true);
else if (peer === "pg-boss") rate = await pgBoss(client);
else throw new Error(`unknown peer ${peer}`);
await client.end();
console.log(JSON.stringify({ rate }));
process.exit(0);
