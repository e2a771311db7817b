//! `holdfast serve`: the assembly service. Start-up runs migrations and fails on bad
//! settings; shutdown stops accepting, finishes requests, lets running assemblies finish or
//! releases their leases, and closes the pools.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use holdfast::tasks::{Queue, Worker, WorkerHandle, WorkerPools};
use holdfast::Pool;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::oneshot;

use crate::api::{app, AppState};
use crate::assembly;
use crate::config::ServeArgs;
use crate::domain::ASSEMBLE;
use crate::schema;

/// The process-wide Prometheus recorder (installed once, before any pool is created).
pub fn prometheus() -> Option<Arc<PrometheusHandle>> {
    static HANDLE: OnceLock<Option<Arc<PrometheusHandle>>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok().map(Arc::new))
        .clone()
}

/// A running service.
#[derive(Debug)]
pub struct Service {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    http: tokio::task::JoinHandle<Result<(), String>>,
    worker: Option<WorkerHandle>,
    pools: Vec<Pool>,
    api: Pool,
    queue: Queue,
}

impl Service {
    /// Starts the service: pools, migrations, the assembly worker, the HTTP listener.
    pub async fn start(args: &ServeArgs) -> Result<Service, String> {
        let metrics = prometheus();
        let api = Pool::new(args.api_pool().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let control =
            Pool::new(args.control_pool().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let work = Pool::new(args.work_pool().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let queue = Queue::from_source(args).map_err(|e| e.to_string())?;
        schema::migrate(&api).await?;
        queue.migrate(&control).await.map_err(|e| e.to_string())?;
        if args.has_tasks_route() {
            tracing::info!("assembly workers connect through TASKS_DATABASE_URL");
        }
        let step = args.assembly_step().map_err(|e| e.to_string())?;
        let worker = Worker::new(
            queue.clone(),
            WorkerPools {
                control: control.clone(),
                work: work.clone(),
            },
            args.worker().map_err(|e| e.to_string())?,
        )
        .handle(ASSEMBLE, assembly::body(step))
        .spawn()
        .map_err(|e| e.to_string())?;
        let listen = args.listen().map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("LISTEN: cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = AppState {
            pool: api.clone(),
            queue: queue.clone(),
            metrics,
            request_timeout: args.request_timeout().map_err(|e| e.to_string())?,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            axum::serve(listener, app(state))
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .map_err(|e| e.to_string())
        });
        tracing::info!(%addr, "serving");
        Ok(Service {
            addr,
            stop: Some(stop),
            http,
            worker: Some(worker),
            pools: vec![control, work],
            api,
            queue,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's pool (for reports and tests).
    pub fn api_pool(&self) -> &Pool {
        &self.api
    }

    /// The task queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Stops in order: no new requests, running requests finish, running assemblies finish
    /// within the grace period or give their leases back, pools close.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = (&mut self.http).await.map_err(|e| e.to_string())?;
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await;
        }
        self.api.close().await;
        for pool in &self.pools {
            pool.close().await;
        }
        tracing::info!("stopped");
        served
    }
}

/// `holdfast serve`: runs until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<(), String> {
    ServeArgs::refuse_overridden(&holdfast::pool::ProcessEnv).map_err(|e| e.to_string())?;
    let service = Service::start(&args).await?;
    println!("listening on http://{}", service.addr());
    shutdown.await;
    tracing::info!("shutting down");
    service.stop().await
}
