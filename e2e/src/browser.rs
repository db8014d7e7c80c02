//! A real browser for the console's tests: Debian's `chromium`, headless, driven through
//! `chromedriver` over WebDriver (fantoccini). Nothing leaves the machine: background networking
//! is off and the only pages opened are the console's through a port-forward. The console's
//! certificate is trusted by its public key alone (`--ignore-certificate-errors-spki-list`),
//! not by turning certificate checks off.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;

/// Chromium's net error for a request cut off by a change of the machine's interfaces.
const NETWORK_CHANGED: &str = "ERR_NETWORK_CHANGED";
/// How many times one navigation is repeated after a network change.
const RELOADS: u32 = 3;

/// A browser session, closed (and chromedriver stopped) when dropped.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    profile: std::path::PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The base64 SHA-256 of a PEM certificate's public key, as chromium's SPKI list takes it.
pub fn spki_sha256(certificate_pem: &str) -> String {
    let pem = std::env::temp_dir().join(format!("miniautoml-e2e-spki-{}.pem", std::process::id()));
    std::fs::write(&pem, certificate_pem).expect("write the certificate");
    let script = format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        pem.display()
    );
    let output = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("openssl");
    let _ = std::fs::remove_file(&pem);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl Browser {
    /// Starts chromedriver and a headless chromium that trusts the certificate whose public key
    /// hashes to `trusted_spki`.
    pub fn start(trusted_spki: &str) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .args([&format!("--port={port}"), "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; hack/e2e.sh installs it)");
        let profile = std::env::temp_dir().join(format!("miniautoml-e2e-chromium-{}", std::process::id()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    // Root in a VM without user namespaces for the sandbox.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-default-apps",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1440,1000",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--ignore-certificate-errors-spki-list={trusted_spki}"),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt = runtime.block_on(
                ClientBuilder::new(connector)
                    .capabilities(capabilities.clone())
                    .connect(&url),
            );
            match attempt {
                Ok(client) => break client,
                // chromedriver not listening yet.
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(250)),
                Err(error) => panic!("no chromium session through chromedriver at {url}: {error}"),
            }
        };
        Browser {
            runtime,
            client: Some(client),
            driver,
            profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("an open session")
    }

    /// Opens `url` and waits for the page to load. A navigation that chromium aborts because the
    /// machine's network changed (every pod the test starts adds an interface on this host) is
    /// retried, as a user would reload; any other failure fails the test.
    pub fn goto(&self, url: &str) {
        // The fragment may carry a token: never into a log.
        let shown = url.split('#').next().unwrap_or_default();
        for attempt in 1.. {
            match self.runtime.block_on(self.client().goto(url)) {
                Ok(()) if self.network_changed() && attempt < RELOADS => {
                    eprintln!("[browser] {shown}: ERR_NETWORK_CHANGED, opening it again");
                }
                Ok(()) => return,
                Err(e) if e.to_string().contains(NETWORK_CHANGED) && attempt < RELOADS => {
                    eprintln!("[browser] {shown}: {e}; opening it again");
                }
                Err(e) => panic!("open {shown}: {e}"),
            }
        }
    }

    /// Whether the window shows chromium's own error page for a navigation aborted by a network
    /// change (not a page of ours: those never carry `#main-frame-error`).
    fn network_changed(&self) -> bool {
        self.runtime
            .block_on(self.client().execute(
                "const e = document.getElementById('main-frame-error'); return e !== null && document.body.innerText.includes('ERR_NETWORK_CHANGED');",
                Vec::new(),
            ))
            .map(|v| v == Value::Bool(true))
            .unwrap_or(false)
    }

    /// The page's URL, without its fragment (which may carry a token).
    pub fn url(&self) -> String {
        let mut url = self
            .runtime
            .block_on(self.client().current_url())
            .expect("the current URL");
        url.set_fragment(None);
        url.to_string()
    }

    /// What the page shows, for a failure's message: its URL (no fragment), title and text.
    pub fn describe(&self) -> String {
        let page = self
            .runtime
            .block_on(self.client().execute(
                "return document.title + '\\n' + (document.body ? document.body.innerText.slice(0, 600) : '(no body)');",
                Vec::new(),
            ))
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| format!("(the page cannot be read: {e})"));
        format!("{}\n{page}", self.url())
    }

    /// The value of a script (`return …;`) run in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something other than `null`/`false`, and returns it.
    /// A page that chromium replaced with its network-change error page is reloaded (at most
    /// a few times), as a user would; every other page is left as it is.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        let mut reloads = 0;
        loop {
            let value = self
                .runtime
                .block_on(self.client().execute(script, Vec::new()))
                .unwrap_or(Value::Null);
            if !(value.is_null() || value == Value::Bool(false)) {
                return value;
            }
            if reloads < RELOADS && self.network_changed() {
                reloads += 1;
                eprintln!("[browser] {}: ERR_NETWORK_CHANGED, reloading", self.url());
                let _ = self.runtime.block_on(self.client().refresh());
                continue;
            }
            if Instant::now() > deadline {
                let shot =
                    std::env::temp_dir().join(format!("miniautoml-e2e-timeout-{}.png", std::process::id()));
                self.screenshot(&shot);
                panic!(
                    "timed out after {timeout:?} waiting for {what}; the page:\n{}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Clicks the element `css` selects.
    pub fn click(&self, css: &str) {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(css)).await.expect(css);
            element.click().await.expect(css);
        });
    }

    /// Types `text` into the element `css` selects.
    pub fn type_into(&self, css: &str, text: &str) {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(css)).await.expect(css);
            element.send_keys(text).await.expect(css);
        });
    }

    /// Saves a PNG of the window to `file`.
    pub fn screenshot(&self, file: &Path) {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("a screenshot");
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).expect("the screenshots' folder");
        }
        std::fs::write(file, png).expect("write the screenshot");
        println!("screenshot: {}", file.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
