//! Real TCP across the Candy VPN in the simulator: our stack (the tcpstack crate) as an
//! echo server behind one member's virtual interface, smoltcp (a TCP we did not write,
//! driven as in the tcpstack scenarios) as the client behind another's. Every byte of
//! every connection is checked by the ledger (SHA-256 per flow).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tunnelbed_netio::iplink::mem::MemIpLink;
use tunnelbed_netio::{DataFault, Trace};
use tunnelbed_tcpstack::serve::{echo, IpLinkIo};
use tunnelbed_tcpstack::socket::TcpStack;
use tunnelbed_tcpstack::StackConfig;

use crate::ledger::FlowLedger;
use crate::scenarios::candy_common::{now, MTU};
use crate::scenarios::tcpstack_common::{EchoConn, SmolClient};

/// The echo port of our stack.
pub const ECHO_PORT: u16 = 7;

/// Where the echo server leaves its stack (the scenario checks its table at the end).
pub type StackSlot = Arc<Mutex<Option<TcpStack>>>;

/// Runs our stack on `link` at `me` with an echo server on port 7; returns the stack
/// and the task that accepts (abort it at the end).
pub fn echo_server(
    link: MemIpLink,
    me: Ipv4Addr,
    isn_seed: u64,
    trace: Trace,
    fault: Option<Arc<DataFault>>,
) -> Result<(TcpStack, JoinHandle<()>), std::io::Error> {
    let cfg = StackConfig {
        isn_seed,
        mss: (MTU - 40) as u16,
        ..StackConfig::default()
    };
    let (stack, driver) = TcpStack::spawn(IpLinkIo::new(link), cfg, trace);
    let listener = stack.listen(SocketAddrV4::new(me, ECHO_PORT), 16)?;
    let task = tokio::spawn(async move {
        let mut driver = driver;
        loop {
            tokio::select! {
                biased;
                _ = &mut driver => return,
                s = listener.accept() => {
                    let Ok(s) = s else { return };
                    let fault = fault.clone();
                    tokio::spawn(async move {
                        let idle = Duration::from_secs(60);
                        if let Err(e) = echo(s, idle, Duration::from_secs(30), fault).await {
                            tracing::debug!("candy-mesh echo: {e}");
                        }
                    });
                }
            }
        }
    });
    Ok((stack, task))
}

/// smoltcp on `link` at `me`: one connection per payload to `peer`'s echo port, all at
/// once; each sends its payload, half-closes, and reads the echo to its end. Then it
/// keeps answering until `stack`'s table is empty (at most 120 s); returns the
/// connections left there.
#[allow(clippy::too_many_arguments)]
pub async fn echo_client(
    link: MemIpLink,
    me: Ipv4Addr,
    peer: Ipv4Addr,
    payloads: Vec<(String, Vec<u8>)>,
    seed: u64,
    ledger: FlowLedger,
    trace: Trace,
    stack: StackSlot,
) -> Result<Option<usize>, Box<dyn std::error::Error + Send + Sync>> {
    let mut c = SmolClient::new(link, me, seed);
    let remote = SocketAddrV4::new(peer, ECHO_PORT);
    let mut conns = Vec::new();
    let mut handles = Vec::new();
    for (i, (flow, data)) in payloads.into_iter().enumerate() {
        ledger.sent(&flow, &data);
        handles.push(c.connect(remote, 41_000 + i as u16, 64 * 1024)?);
        conns.push(EchoConn::new(flow, data));
    }
    let mut buf = vec![0u8; 64 * 1024];
    while conns.iter().any(|k| !k.done) {
        c.poll();
        for (k, h) in conns.iter_mut().zip(&handles) {
            k.pump(c.socket(*h), &mut buf, now(), &trace, &ledger);
        }
        c.step(Duration::from_millis(50)).await?;
    }
    let left = || {
        stack
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|s| s.connection_count())
    };
    let until = now() + Duration::from_secs(120);
    while now() < until && left() != Some(0) {
        c.step(Duration::from_millis(50)).await?;
    }
    Ok(left())
}
