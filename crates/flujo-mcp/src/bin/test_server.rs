//! `flujo-mcp-test-server`: the MCP server of Flujo's tests (see `flujo_mcp::testing`).
//!
//! ```text
//! flujo-mcp-test-server                      serve MCP on stdin/stdout
//! flujo-mcp-test-server --http 127.0.0.1:0   serve streamable HTTP; the first stdout line is the endpoint URL
//!     [--bearer-env VAR]                     ... requiring `Authorization: Bearer $VAR`
//! flujo-mcp-test-server --exit-at-start N    write a message on stderr and exit with code N at once
//! flujo-mcp-test-server --hang-at-start      never answer (the client's handshake times out)
//! ```

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if let Some(code) = flag("--exit-at-start") {
        eprintln!("test server: refusing to start (asked to exit with code {code})");
        return ExitCode::from(code.parse::<u8>().unwrap_or(2));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("test server: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        if args.iter().any(|a| a == "--hang-at-start") {
            eprintln!("test server: hanging on purpose");
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        }
        match flag("--http") {
            Some(addr) => {
                let bearer = match flag("--bearer-env") {
                    Some(var) => Some(std::env::var(&var).map_err(|_| format!("{var} is not set"))?),
                    None => None,
                };
                let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("bind {addr}: {e}"))?;
                let local = listener.local_addr().map_err(|e| e.to_string())?;
                let mut out = std::io::stdout();
                let _ = writeln!(out, "http://{local}/mcp");
                let _ = out.flush();
                flujo_mcp::testing::serve_http(listener, bearer).await
            }
            None => flujo_mcp::testing::serve_stdio().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("test server: {e}");
            ExitCode::from(1)
        }
    }
}
