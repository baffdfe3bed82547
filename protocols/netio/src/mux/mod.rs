//! What the drivers of stream multiplexers (pong, h2tunnel) share: the carrier half.
//!
//! A multiplexer's driver owns a sans-IO session and moves bytes between one ordered
//! carrier (TCP, TLS, WebSocket, a KCP stream from [`crate::arq`]) and many application
//! streams. The carrier side is the same for every such protocol, so it lives here once:
//!
//! - [`carrier_writer`]: the writer task. It takes items (each a list of byte pieces, in
//!   order) from a bounded queue and gathers whatever is already queued, up to
//!   [`WRITE_BATCH`] bytes, into one vectored write (at most [`MAX_IOV`] pieces per call),
//!   or into one contiguous write on a carrier that does not take vectors (a WebSocket
//!   carrier sends one message per write). A system call per item costs more than
//!   gathering. It wakes the connection task whenever it frees queue room, flushes once
//!   the queue is empty, and shuts the carrier down when the queue closes.
//! - [`read_some`]: one carrier read of at most [`READ_BUF`] bytes into a reused
//!   `BytesMut`, so a driver can freeze what it read and hand payloads on as slices.
//! - [`write_pieces`]: the vectored write loop behind the writer.
//! - [`sleep_until`]: a timer that never fires when the machine wants none.
//!
//! The writer running as its own task is what keeps two ends writing bulk at each other
//! from deadlocking: the connection task goes on reading while the carrier is slow.
//! Backpressure stays the driver's: its queue to the writer is bounded, and it stops
//! taking application writes while the machine's own output is half full.

mod carrier;
mod conn;
mod pump;

pub use crate::mux_session::{MuxEvent, MuxRecv, MuxSession};
pub use crate::timer::sleep_until;
pub use carrier::{carrier_writer, read_some, write_pieces, MAX_IOV, READ_BUF, WRITE_BATCH};
pub use conn::{
    end_error, gone, send_in_order, Attached, Cause, Cmd, CmdOf, ConnConfig, ConnStats, ConnTask,
    Core, Ctl, CtlOf, Info, MuxHooks, MuxProto, MuxStream, ResetWatch, StreamEnd, CMD_BATCH,
    CMD_QUEUE, WRITE_CHUNK,
};
pub use pump::{transmit, CarrierPump, WriteFailed};
