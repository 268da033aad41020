//! An MQTT 3.1.1 client session (TS-0010 clause 6.3) over any byte stream, in practice a TLS
//! connection from [`crate::connect`]: CONNECT, SUBSCRIBE, PUBLISH at QoS 1 (clause 6.4.1.1:
//! never QoS 2) with PUBACK, and keep-alive pings. The packet codec is rumqttc's (mqttbytes v4);
//! the session, its limits and its errors are ours.
//!
//! A session ends when the stream does: the receiver of its messages then yields `None`, and the
//! owner connects again. Publications are not kept for a later session (no retransmission):
//! oneM2M requests carry their own Request Identifier and expiration, and an originator repeats
//! what got no answer.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use std::fmt;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// What a session is opened with.
#[derive(Clone, Debug)]
pub struct Options {
    /// The Client Identifier (clause 6.3.3: `C::<CSE-ID>` or `A::<AE-ID>`).
    pub client_id: String,
    /// Clause 6.3.3 asks for `false`: the broker keeps the subscriptions of a client that lost
    /// its connection.
    pub clean_session: bool,
    /// PINGREQ at half this interval; 0 turns keep-alive off.
    pub keep_alive: Duration,
    /// The largest packet read or written; a larger one ends the session.
    pub max_packet: usize,
    /// Time for the CONNACK and the SUBACK.
    pub timeout: Duration,
}

/// Why a session could not be opened or went on no longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttError {
    /// The broker answered CONNECT with a refusal.
    Refused(String),
    /// The broker refused a subscription (its ACL): the filter.
    SubscriptionRefused(String),
    /// The stream failed or closed, or a packet was malformed.
    Transport(String),
    Timeout,
}

impl fmt::Display for MqttError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MqttError::Refused(why) => write!(f, "the MQTT server refused the connection: {why}"),
            MqttError::SubscriptionRefused(filter) => {
                write!(f, "the MQTT server refused the subscription to {filter}")
            }
            MqttError::Transport(why) => write!(f, "MQTT connection: {why}"),
            MqttError::Timeout => f.write_str("the MQTT server did not answer in time"),
        }
    }
}

impl std::error::Error for MqttError {}

/// A message published to a topic this session subscribed to.
#[derive(Clone, Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
}

/// Publishes on the session; cheap to clone. Fails once the session has ended.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Packet>,
    pkid: Arc<AtomicU16>,
    max_packet: usize,
    subacks: SubAcks,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Publishes `payload` on `topic` at QoS 1.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), MqttError> {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
        p.pkid = self.next_pkid();
        if p.size() > self.max_packet {
            return Err(MqttError::Transport(format!(
                "a message of {} bytes is larger than the {} bytes allowed",
                p.size(),
                self.max_packet
            )));
        }
        self.tx
            .send(Packet::Publish(p))
            .await
            .map_err(|_| MqttError::Transport("the session has ended".into()))
    }

    /// Subscribes to `filters` at QoS 1 and waits for the server's SUBACK; a filter the server
    /// refuses is an error.
    pub async fn subscribe(&self, filters: &[String], timeout: Duration) -> Result<(), MqttError> {
        let pkid = self.next_pkid();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.subacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pkid, tx);
        let mut sub =
            Subscribe::new_many(filters.iter().map(|f| {
                rumqttc::mqttbytes::v4::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)
            }));
        sub.pkid = pkid;
        let sent = self.tx.send(Packet::Subscribe(sub)).await;
        let codes = match sent {
            Ok(()) => tokio::time::timeout(timeout, rx).await,
            Err(_) => {
                return Err(MqttError::Transport("the session has ended".into()));
            }
        };
        self.subacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pkid);
        let codes = codes
            .map_err(|_| MqttError::Timeout)?
            .map_err(|_| MqttError::Transport("the session has ended".into()))?;
        for (code, filter) in codes.iter().zip(filters) {
            if *code == SubscribeReasonCode::Failure {
                return Err(MqttError::SubscriptionRefused(filter.clone()));
            }
        }
        Ok(())
    }

    /// Whether the session still runs.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Packet identifiers 1..=65535, never 0 (MQTT 3.1.1 clause 2.3.1).
    fn next_pkid(&self) -> u16 {
        loop {
            let id = self.pkid.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

/// Opens a session on `stream`: CONNECT, then SUBSCRIBE to every filter of `options`; then the
/// reading and writing run in tasks of their own. Returns the publisher and the messages.
pub async fn open<S>(
    stream: S,
    options: &Options,
) -> Result<(Publisher, mpsc::Receiver<Message>), MqttError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(4096);
    let mut connect = rumqttc::mqttbytes::v4::Connect::new(options.client_id.clone());
    connect.clean_session = options.clean_session;
    connect.keep_alive = u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX);
    write_packet(&mut writer, &Packet::Connect(connect), options.max_packet).await?;
    let answer = within(
        options.timeout,
        read_packet(&mut reader, &mut buf, options.max_packet),
    )
    .await?;
    match answer {
        Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
        Packet::ConnAck(ack) => return Err(MqttError::Refused(format!("{:?}", ack.code))),
        other => {
            return Err(MqttError::Transport(format!(
                "expected CONNACK, got {:?}",
                packet_name(&other)
            )))
        }
    }
    let (out_tx, out_rx) = mpsc::channel::<Packet>(256);
    let out_tx_reader = out_tx.clone();
    let (max, keep_alive) = (options.max_packet, options.keep_alive);
    let (in_tx, in_rx) = mpsc::channel::<Message>(256);
    let (dead_tx, dead_rx) = tokio::sync::oneshot::channel::<()>();
    let subacks = SubAcks::default();
    tokio::spawn(write_loop(writer, out_rx, dead_rx, keep_alive, max));
    let waiting = Arc::clone(&subacks);
    tokio::spawn(async move {
        read_loop(reader, buf, in_tx, out_tx_reader, waiting, max, keep_alive).await;
        let _ = dead_tx.send(());
    });
    let publisher = Publisher {
        tx: out_tx,
        pkid: Arc::new(AtomicU16::new(1)),
        max_packet: max,
        subacks,
    };
    Ok((publisher, in_rx))
}

/// SUBSCRIBEs awaiting their SUBACK, by packet identifier.
type SubAcks = Arc<
    std::sync::Mutex<
        std::collections::HashMap<u16, tokio::sync::oneshot::Sender<Vec<SubscribeReasonCode>>>,
    >,
>;

async fn within<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, MqttError>>,
) -> Result<T, MqttError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| MqttError::Timeout)?
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

async fn write_packet<W: AsyncWrite + Unpin>(
    w: &mut W,
    p: &Packet,
    max: usize,
) -> Result<(), MqttError> {
    let mut out = BytesMut::new();
    p.write(&mut out, max)
        .map_err(|e| MqttError::Transport(e.to_string()))?;
    w.write_all(&out)
        .await
        .map_err(|e| MqttError::Transport(e.to_string()))?;
    w.flush()
        .await
        .map_err(|e| MqttError::Transport(e.to_string()))
}

/// The next whole packet, reading as much as it needs.
async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, MqttError> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(p),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(MqttError::Transport(e.to_string())),
        }
        let n = r
            .read_buf(buf)
            .await
            .map_err(|e| MqttError::Transport(e.to_string()))?;
        if n == 0 {
            return Err(MqttError::Transport("closed by the MQTT server".into()));
        }
    }
}

/// Writes what the publishers and the reader queue, and a PINGREQ when keep-alive is due; ends
/// with the reader (`dead`), which closes the publishers.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Packet>,
    mut dead: tokio::sync::oneshot::Receiver<()>,
    keep_alive: Duration,
    max: usize,
) {
    let ping_every = if keep_alive.is_zero() {
        Duration::from_secs(24 * 3600)
    } else {
        keep_alive / 2
    };
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    loop {
        let packet = tokio::select! {
            p = rx.recv() => match p {
                Some(p) => p,
                None => break,
            },
            _ = ping.tick(), if !keep_alive.is_zero() => Packet::PingReq,
            _ = &mut dead => break,
        };
        if write_packet(&mut w, &packet, max).await.is_err() {
            break;
        }
    }
    let _ = write_packet(&mut w, &Packet::Disconnect, max).await;
    let _ = w.shutdown().await;
}

/// Reads packets: PUBLISH goes to the owner (acknowledged at QoS 1; a retained message is
/// acknowledged and dropped: a request kept by the server would run again at every
/// subscription), SUBACK to its SUBSCRIBE, the rest is bookkeeping. A server silent for one and
/// a half keep-alive intervals is gone (MQTT 3.1.1 clause 3.1.2.10).
async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    mut buf: BytesMut,
    messages: mpsc::Sender<Message>,
    out: mpsc::Sender<Packet>,
    subacks: SubAcks,
    max: usize,
    keep_alive: Duration,
) {
    let silence = if keep_alive.is_zero() {
        Duration::from_secs(24 * 3600)
    } else {
        keep_alive + keep_alive / 2
    };
    loop {
        let packet = match tokio::time::timeout(silence, read_packet(&mut r, &mut buf, max)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "MQTT session ended");
                break;
            }
            Err(_) => {
                tracing::debug!("MQTT server silent past keep-alive");
                break;
            }
        };
        match packet {
            Packet::Publish(p) => {
                if p.qos != QoS::AtMostOnce
                    && out.send(Packet::PubAck(PubAck::new(p.pkid))).await.is_err()
                {
                    break;
                }
                if p.retain {
                    continue;
                }
                let topic = p.topic.clone();
                let m = Message {
                    topic,
                    payload: p.payload,
                };
                if messages.send(m).await.is_err() {
                    break;
                }
            }
            Packet::SubAck(ack) => {
                let waiter = subacks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&ack.pkid);
                if let Some(tx) = waiter {
                    let _ = tx.send(ack.return_codes);
                }
            }
            // QoS 2 is never asked for; acknowledgements and pings need nothing.
            Packet::Disconnect => break,
            _ => {}
        }
    }
}
