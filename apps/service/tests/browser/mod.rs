//! A real browser for the console's tests: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, which `.ci/run` installs), through the small
//! HTTP client the load harness uses. Only the handful of W3C WebDriver commands the tests
//! need.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use holdfast_service::harness::http_client::fetch;
use holdfast_testkit::eventually;
use serde_json::{json, Value};

const DRIVERS: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];
const BROWSERS: &[&str] = &["/usr/bin/chromium", "/usr/lib/chromium/chromium"];
/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const WAIT: Duration = Duration::from_secs(60);

fn first_existing(paths: &[&'static str]) -> &'static str {
    match paths.iter().find(|p| std::path::Path::new(p).exists()) {
        Some(p) => p,
        None => panic!(
            "the console's browser tests need Chromium and its WebDriver: none of {paths:?} exists \
             (apt-get install chromium chromium-driver; .ci/run does)"
        ),
    }
}

/// A running chromedriver and one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session.
    pub async fn start() -> Browser {
        let driver_path = first_existing(DRIVERS);
        let browser_path = first_existing(BROWSERS);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("a free port: {e}"));
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {driver_path}: {e}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        eventually("chromedriver answers /status", || async move {
            fetch(addr, "GET", "/status", None, Duration::from_secs(2))
                .await
                .ok()
                .and_then(|r| serde_json::from_str::<Value>(&r.text).ok())
                .is_some_and(|v| v["value"]["ready"] == true)
        })
        .await;
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let created = browser
            .command(
                "POST",
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": browser_path,
                        // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
                        "args": ["--headless", "--no-sandbox", "--disable-dev-shm-usage",
                                 "--disable-gpu", "--window-size=1280,2400"]
                    }
                }}}),
            )
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_string();
        browser
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (method != "GET" && method != "DELETE").then_some(&body);
        let reply = fetch(self.addr, method, path, body, WAIT)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: no answer ({})", e.as_str()));
        let value: Value = serde_json::from_str(&reply.text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON ({e}): {}", reply.text));
        assert_eq!(reply.status, 200, "WebDriver {method} {path}: {value}");
        value["value"].clone()
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Loads `url` and waits for the page.
    pub async fn open(&self, url: &str) {
        self.command("POST", &self.at("/url"), json!({ "url": url }))
            .await;
    }

    /// The element matching a CSS selector (fails the test when there is none).
    pub async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                "POST",
                &self.at("/element"),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// Types into an element.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            "POST",
            &self.at(&format!("/element/{element}/value")),
            json!({ "text": text }),
        )
        .await;
    }

    /// Clicks an element (a button submits its form and the next page loads).
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command("POST", &self.at(&format!("/element/{element}/click")), json!({}))
            .await;
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        let source = self.command("GET", &self.at("/source"), json!({})).await;
        source.as_str().unwrap_or_default().to_string()
    }

    /// The page's HTML once it contains `text` (a click's navigation may still be under way
    /// when the click returns); fails the test after a bounded wait.
    pub async fn page_with(&self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never showed {text:?} within {WAIT:?}; it is now: {source}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The page's address now.
    pub async fn url(&self) -> String {
        let url = self.command("GET", &self.at("/url"), json!({})).await;
        url.as_str().unwrap_or_default().to_string()
    }

    /// Forgets every cookie (signs out without the page's help).
    pub async fn delete_cookies(&self) {
        self.command("DELETE", &self.at("/cookie"), json!({})).await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let shot = self.command("GET", &self.at("/screenshot"), json!({})).await;
        base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot is not base64: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser through the driver's own shutdown, then the driver.
        let addr = self.addr;
        let _ = std::thread::spawn(move || {
            use std::io::Write;
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let _ =
                    s.write_all(b"GET /shutdown HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
                let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
