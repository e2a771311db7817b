//! `holdfast serve`: the assembly service. Start-up runs migrations and fails on bad
//! settings; shutdown stops accepting, finishes requests, lets running assemblies finish or
//! releases their leases, and closes the pools.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use holdfast::tasks::{Queue, Worker, WorkerHandle, WorkerPools};
use holdfast::Pool;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::oneshot;

use crate::error::ServiceError;
use crate::service::api::{app_with_console, AppState};
use crate::service::assembly;
use crate::service::config::ServeArgs;
use crate::service::console::Console;
use crate::service::domain::ASSEMBLE;
use crate::service::schema;

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
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    worker: Option<WorkerHandle>,
    pools: Vec<Pool>,
    api: Pool,
    queue: Queue,
    state: AppState,
    console: Option<Console>,
}

impl Service {
    /// Starts the service: pools, migrations, the assembly worker, the HTTP listener.
    pub async fn start(args: &ServeArgs) -> Result<Service, ServiceError> {
        let token = args.admin_token()?;
        let metrics = prometheus();
        let api = Pool::new(args.api_pool()?)?;
        let replica = args.replica_pool()?.map(Pool::new).transpose()?;
        let control = Pool::new(args.control_pool()?)?;
        let work = Pool::new(args.work_pool()?)?;
        let queue = Queue::from_source(args)?;
        schema::migrate(&api).await?;
        queue.migrate(&control).await?;
        if args.has_tasks_route() {
            tracing::info!("assembly workers connect through TASKS_DATABASE_URL");
        }
        let step = args.assembly_step()?;
        let worker = Worker::new(
            queue.clone(),
            WorkerPools {
                control: control.clone(),
                work: work.clone(),
            },
            args.worker()?,
        )
        .handle(ASSEMBLE, assembly::body(step))
        .spawn()?;
        let listen = args.listen()?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(ServiceError::io(format!("LISTEN: cannot listen on {listen}")))?;
        let addr = listener
            .local_addr()
            .map_err(ServiceError::io("LISTEN: the socket has no address"))?;
        if replica.is_some() {
            tracing::info!("the API's reads go through DATABASE_REPLICA_URL");
        }
        let state = AppState {
            reads: replica.clone().unwrap_or_else(|| api.clone()),
            pool: api.clone(),
            queue: queue.clone(),
            metrics,
            request_timeout: args.request_timeout()?,
        };
        let console = match token {
            Some(token) => {
                let charted = [api.clone()]
                    .into_iter()
                    .chain(replica.clone())
                    .chain([work.clone(), control.clone()])
                    .collect();
                tracing::info!(%addr, "console at /console");
                Some(Console::new(
                    &token,
                    charted,
                    api.clone(),
                    queue.clone(),
                    state.metrics.clone(),
                ))
            }
            None => {
                tracing::info!("console off: ADMIN_TOKEN is not set");
                None
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let router = app_with_console(state.clone(), console.clone());
        let http = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "serving");
        Ok(Service {
            addr,
            stop: Some(stop),
            http,
            worker: Some(worker),
            pools: [control, work].into_iter().chain(replica).collect(),
            api,
            queue,
            state,
            console,
        })
    }

    /// The service's own router (its pools, replica included), for calling it without a
    /// socket.
    pub fn router(&self) -> axum::Router {
        app_with_console(self.state.clone(), self.console.clone())
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
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = match (&mut self.http).await {
            Ok(served) => served.map_err(ServiceError::io("serving HTTP")),
            Err(e) => Err(ServiceError::Run(format!("the HTTP server task failed: {e}"))),
        };
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await;
        }
        self.console.take();
        self.api.close().await;
        for pool in &self.pools {
            pool.close().await;
        }
        tracing::info!("stopped");
        served
    }
}

/// `holdfast serve`: runs until Ctrl-C or SIGTERM.
pub async fn run(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServiceError> {
    ServeArgs::refuse_overridden(&holdfast::pool::ProcessEnv)?;
    let service = Service::start(&args).await?;
    println!("listening on http://{}", service.addr());
    shutdown.await;
    tracing::info!("shutting down");
    service.stop().await
}
