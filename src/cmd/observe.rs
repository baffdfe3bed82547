//! `--pcap FILE` and `--trace FILE` for roles on real sockets: the same capture wrapper
//! and transition trace the simulator uses, so a real run against a peer is examined
//! (Wireshark, `tunnelbed replay`) like a simulated one. Files are written when the role
//! stops: on Ctrl-C or SIGTERM, or when it fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use tunnelbed_netio::{Capture, CaptureNet, Clock, TokioNet, Trace};

/// Capture and trace options shared by every real role.
#[derive(Args, Debug, Clone, Default)]
pub struct ObserveArgs {
    /// Record every datagram and TCP segment this process sends or receives into a
    /// pcapng file (written when the role stops: Ctrl-C, SIGTERM or an error). TCP is
    /// recorded as the bytes the sockets carried both ways, with synthesized headers
    /// (no retransmissions: the kernel's TCP is below what a socket sees).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Write the protocol machines' state transitions (text, one per line) to FILE when
    /// the role stops.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Most bytes of capture kept in memory; packets past it are counted, not kept.
    #[arg(long, value_name = "BYTES", default_value_t = tunnelbed_netio::capture::DEFAULT_CAPTURE_LIMIT)]
    pub pcap_limit: usize,
}

/// A started observation: the network to run the role on, the trace to give its
/// machines, and the files to write at the end.
pub struct Observe {
    capture: Option<Capture>,
    net: CaptureNet<TokioNet>,
    trace: Trace,
    args: ObserveArgs,
}

/// Wall-clock time since the Unix epoch, so captures show real times in Wireshark.
fn wall_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    })
}

impl ObserveArgs {
    /// Starts recording as asked; `host` names the capture interface.
    pub fn start(&self, host: &str) -> Observe {
        let capture = self
            .pcap
            .as_ref()
            .map(|_| Capture::sole_observer(wall_clock(), self.pcap_limit));
        let net = CaptureNet::maybe(TokioNet, capture.as_ref().map(|c| c.interface(host)));
        let trace = if self.trace.is_some() {
            // Transitions are stamped from the role's start.
            let start = std::time::Instant::now();
            Trace::with_clock(Arc::new(move || start.elapsed()))
        } else {
            Trace::disabled()
        };
        Observe {
            capture,
            net,
            trace,
            args: self.clone(),
        }
    }
}

impl Observe {
    /// The network roles run on (records when `--pcap` was given).
    pub fn net(&self) -> CaptureNet<TokioNet> {
        self.net.clone()
    }

    /// The trace machines record into (disabled without `--trace`).
    pub fn trace(&self) -> Trace {
        self.trace.clone()
    }

    /// Runs `role` until it ends or the process is asked to stop (Ctrl-C, SIGTERM), then
    /// writes the files. The role's own error, if any, is returned after the files.
    pub async fn run<F>(&self, role: F) -> anyhow::Result<()>
    where
        F: std::future::Future<Output = std::io::Result<()>>,
    {
        let outcome = tokio::select! {
            biased;
            _ = stop_signal() => {
                tracing::info!("stop requested; writing the capture and trace");
                Ok(())
            }
            r = role => r.map_err(anyhow::Error::from),
        };
        self.finish()?;
        outcome
    }

    /// Writes the pcap and the trace, if asked for.
    pub fn finish(&self) -> anyhow::Result<()> {
        if let (Some(path), Some(cap)) = (&self.args.pcap, &self.capture) {
            std::fs::write(path, cap.to_bytes())
                .with_context(|| format!("writing the capture {}", path.display()))?;
            if cap.dropped_over_limit() > 0 {
                tracing::warn!(
                    "capture {}: {} packets past --pcap-limit were not kept",
                    path.display(),
                    cap.dropped_over_limit()
                );
            }
            eprintln!("capture: {} ({} packets)", path.display(), cap.packets());
        }
        if let Some(path) = &self.args.trace {
            std::fs::write(path, self.trace.render())
                .with_context(|| format!("writing the trace {}", path.display()))?;
            eprintln!(
                "trace: {} ({} transitions)",
                path.display(),
                self.trace.len()
            );
        }
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM (a signal handler that cannot be installed never fires).
pub(super) async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
