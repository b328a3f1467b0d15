//! One keep-alive HTTP/1.1 connection, the way a load generator needs it: no pool, no
//! redirects, no decompression — just requests on one socket, as cheap as hyper makes them.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::workload::PRODUCT;

/// A client connection.
pub struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl HttpConn {
    /// Connect (TCP_NODELAY, as every HTTP client does for request/response traffic).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// POST a JSON body; the status and the whole response body.
    pub async fn post_json(&mut self, path: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let request = Request::post(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// POST a JSON body with one extra header (a receiver's secret).
    pub async fn post_json_with(
        &mut self,
        path: &str,
        body: Bytes,
        header: &'static str,
        value: &str,
    ) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let request = Request::post(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(header, HeaderValue::from_str(value)?)
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// GET `path` on a fresh connection; the status and body (operator routes, rarely called).
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get(path)
        .header(HOST, HeaderValue::from_str(&addr.to_string())?)
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A `/retrieval` body the way a Dify chatflow sends it when a Template node puts the user's
/// identifier on the query's first line (route 1 of the reference), for `bench_prod`.
pub fn retrieval_body(identifier: &str, question: &str, top_k: u32) -> Bytes {
    let body = json!({
        "knowledge_id": PRODUCT,
        "query": format!("{identifier}\n{question}"),
        "retrieval_setting": {"top_k": top_k, "score_threshold": 0.0},
    });
    Bytes::from(body.to_string())
}

/// Did `/retrieval` answer with at least one record? (A cheap prefix test: the load generator
/// must not spend its CPU parsing JSON.)
pub fn has_records(body: &[u8]) -> bool {
    body.starts_with(br#"{"records":[{"#)
}

/// The sum of every sample of a Prometheus metric (all label sets), 0 when absent.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}
