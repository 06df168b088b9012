//! The blob store's endpoints: every endpoint's happy path and bad inputs, a resumed
//! upload after an interrupted one, quota, size limit and expiry; against an in-process
//! server on port 0, once with SQLite and once with PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use tacit_api::*;
use tacit_tests::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn assert_code<T: std::fmt::Debug>(r: Result<T, Failure>, status: u16, code: ErrorCode) {
    let f = r.expect_err("expected an error");
    assert_eq!(f.status.as_u16(), status, "{:?}", f.body);
    assert_eq!(f.body.code, code, "{:?}", f.body);
}

async fn create(client: &Client, size: u64) -> Result<CreateBlobResponse, Failure> {
    client
        .call(Method::POST, "/v1/blobs", Some(&CreateBlobRequest { size }))
        .await
        .map(|(status, r)| {
            assert_eq!(status, StatusCode::CREATED);
            r
        })
}

/// `PATCH` `body` at `offset`; the new offset, or the failure with the offset header.
async fn patch(
    client: &Client,
    id: &str,
    offset: u64,
    body: &[u8],
) -> Result<u64, (Failure, Option<u64>)> {
    let response = client
        .request(Method::PATCH, &format!("/v1/blobs/{id}"))
        .header("content-type", BLOB_UPLOAD_CONTENT_TYPE)
        .header(UPLOAD_OFFSET, offset)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let at = header(&response, UPLOAD_OFFSET);
    if status == StatusCode::NO_CONTENT {
        return Ok(at.expect("the new offset"));
    }
    let body = response.json().await.unwrap();
    Err((Failure { status, body }, at))
}

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// `HEAD`: (status, offset, length).
async fn head(client: &Client, id: &str) -> (StatusCode, Option<u64>, Option<u64>) {
    let response = client
        .request(Method::HEAD, &format!("/v1/blobs/{id}"))
        .send()
        .await
        .unwrap();
    (
        response.status(),
        header(&response, UPLOAD_OFFSET),
        header(&response, UPLOAD_LENGTH),
    )
}

/// `GET`, optionally with a `Range` header: (status, headers, body).
async fn get(
    client: &Client,
    id: &str,
    range: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = client.request(Method::GET, &format!("/v1/blobs/{id}"));
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect()
}

async fn blobs(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.blobs.max_file_bytes = 100_000;
        c.blobs.quota_bytes_per_account = 250_000;
    })
    .await;
    let alice = server.register("alice", 0).await;
    let bob = server.register("bob", 0).await;
    let anon = server.client(None);
    let blob_dir = server.data_dir.path().join("blobs");

    // Reserving: exact sizes up to the file limit plus the encryption overhead.
    let max_blob = 100_000 + 17 + 16 * 2;
    let blob = create(&alice, 1000).await.unwrap();
    assert_eq!(blob.blob_id.len(), 22);
    assert!(blob.expires_at.0 > 0);
    let other = create(&alice, 1000).await.unwrap();
    assert_ne!(blob.blob_id, other.blob_id);
    create(&alice, max_blob).await.unwrap();
    assert_code(
        create(&alice, max_blob + 1).await,
        413,
        ErrorCode::PayloadTooLarge,
    );
    assert_code(create(&alice, 0).await, 400, ErrorCode::BadRequest);
    assert_code(create(&anon, 10).await, 401, ErrorCode::Unauthorized);
    let r = alice
        .call::<_, CreateBlobResponse>(
            Method::POST,
            "/v1/blobs",
            Some(&serde_json::json!({"size": -1})),
        )
        .await;
    assert_code(r, 400, ErrorCode::BadRequest);

    // The upload's progress, for its owner only.
    let id = blob.blob_id.as_str();
    assert_eq!(
        head(&alice, id).await,
        (StatusCode::OK, Some(0), Some(1000))
    );
    assert_eq!(head(&bob, id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(head(&anon, id).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        head(&alice, "AAAAAAAAAAAAAAAAAAAAAA").await.0,
        StatusCode::NOT_FOUND
    );

    // Uploading in two parts; a wrong offset is answered with the right one.
    let bytes = data(1000);
    assert_eq!(patch(&alice, id, 0, &bytes[..400]).await.unwrap(), 400);
    assert_eq!(head(&alice, id).await.1, Some(400));
    let (failure, at) = patch(&alice, id, 0, &bytes[..400]).await.unwrap_err();
    assert_eq!(
        (failure.status.as_u16(), failure.body.code),
        (409, ErrorCode::Conflict)
    );
    assert_eq!(at, Some(400));
    let (failure, at) = patch(&alice, id, 500, &bytes[500..]).await.unwrap_err();
    assert_eq!((failure.status.as_u16(), at), (409, Some(400)));
    // Longer than what is left: refused before anything is written.
    let (failure, _) = patch(&alice, id, 400, &data(601)).await.unwrap_err();
    assert_eq!(failure.body.code, ErrorCode::PayloadTooLarge);
    assert_eq!(head(&alice, id).await.1, Some(400));
    // Only the owner writes.
    let (failure, _) = patch(&bob, id, 400, &bytes[400..]).await.unwrap_err();
    assert_eq!(failure.body.code, ErrorCode::NotFound);
    // Bad headers.
    let raw = |content_type: &'static str, offset: &'static str| {
        alice
            .request(Method::PATCH, &format!("/v1/blobs/{id}"))
            .header("content-type", content_type)
            .header(UPLOAD_OFFSET, offset)
            .body(vec![1u8; 10])
            .send()
    };
    let r = decode::<ErrorBody>(raw("application/json", "400").await.unwrap()).await;
    assert_code(r, 415, ErrorCode::UnsupportedMediaType);
    let r = decode::<ErrorBody>(raw(BLOB_UPLOAD_CONTENT_TYPE, "x").await.unwrap()).await;
    assert_code(r, 400, ErrorCode::BadRequest);
    let r = decode::<ErrorBody>(raw(BLOB_UPLOAD_CONTENT_TYPE, "-1").await.unwrap()).await;
    assert_code(r, 400, ErrorCode::BadRequest);
    let response = alice
        .request(Method::PATCH, &format!("/v1/blobs/{id}"))
        .header("content-type", BLOB_UPLOAD_CONTENT_TYPE)
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_code(
        decode::<ErrorBody>(response).await,
        400,
        ErrorCode::BadRequest,
    );

    // Not downloadable until complete.
    assert_eq!(get(&bob, id, None).await.0, StatusCode::NOT_FOUND);
    assert!(blob_dir.join(format!("{id}.part")).exists());
    assert_eq!(patch(&alice, id, 400, &bytes[400..]).await.unwrap(), 1000);
    assert!(blob_dir.join(id).exists());
    assert!(!blob_dir.join(format!("{id}.part")).exists());
    assert_eq!(head(&alice, id).await.1, Some(1000));
    // Completing again is harmless; writing more is not possible.
    assert_eq!(patch(&alice, id, 1000, &[]).await.unwrap(), 1000);
    let (failure, _) = patch(&alice, id, 1000, &[1]).await.unwrap_err();
    assert_eq!(failure.body.code, ErrorCode::PayloadTooLarge);

    // Any authenticated device holding the id downloads it, whole or from an offset.
    let (status, headers, body) = get(&bob, id, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, bytes);
    assert_eq!(headers["content-length"], "1000");
    assert_eq!(headers["accept-ranges"], "bytes");
    let (status, headers, body) = get(&bob, id, Some("bytes=600-")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &bytes[600..]);
    assert_eq!(headers["content-range"], "bytes 600-999/1000");
    let (status, _, body) = get(&bob, id, Some("bytes=10-19")).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &bytes[10..20])
    );
    let (status, headers, body) = get(&bob, id, Some("bytes=1000-")).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["content-range"], "bytes */1000");
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(error.code, ErrorCode::RangeNotSatisfiable);
    // A range form that is not supported is ignored: the whole blob.
    let (status, _, body) = get(&bob, id, Some("bytes=-5")).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 1000));
    assert_eq!(get(&anon, id, None).await.0, StatusCode::UNAUTHORIZED);
    for unknown in ["AAAAAAAAAAAAAAAAAAAAAA", "short", "..%2F..%2Ftacit.db"] {
        assert_eq!(get(&bob, unknown, None).await.0, StatusCode::NOT_FOUND);
    }

    // Quota: 1000 + 1000 + 100049 reserved of 250000.
    create(&alice, 100_000).await.unwrap();
    let r = alice
        .call::<_, CreateBlobResponse>(
            Method::POST,
            "/v1/blobs",
            Some(&CreateBlobRequest { size: 48_000 }),
        )
        .await;
    assert_code(r, 507, ErrorCode::QuotaExceeded);
    // Another account has its own quota.
    create(&bob, 100_000).await.unwrap();
    // Deleting frees the reservation; only the owner deletes.
    let r = bob
        .call_empty::<()>(Method::DELETE, &format!("/v1/blobs/{id}"), None)
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    alice
        .call_empty::<()>(Method::DELETE, &format!("/v1/blobs/{id}"), None)
        .await
        .unwrap();
    assert!(!blob_dir.join(id).exists());
    assert_eq!(get(&bob, id, None).await.0, StatusCode::NOT_FOUND);
    let r = alice
        .call_empty::<()>(Method::DELETE, &format!("/v1/blobs/{id}"), None)
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    create(&alice, 48_000).await.unwrap();

    // Deleting the account deletes its blobs, partial or complete.
    let second = other.blob_id.as_str();
    assert_eq!(patch(&alice, second, 0, &bytes).await.unwrap(), 1000);
    let third = create(&alice, 10).await.unwrap().blob_id;
    assert_eq!(patch(&alice, &third, 0, &[1, 2, 3]).await.unwrap(), 3);
    assert!(blob_dir.join(second).exists());
    assert!(blob_dir.join(format!("{third}.part")).exists());
    alice
        .call_empty::<()>(Method::DELETE, "/v1/accounts/me", None)
        .await
        .unwrap();
    assert_eq!(get(&bob, second, None).await.0, StatusCode::NOT_FOUND);
    let left: Vec<_> = std::fs::read_dir(&blob_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    server.stop().await;
}
both!(blobs);

/// An upload cut off mid-body keeps what arrived; the client asks for the offset and
/// resumes from there. Expired blobs, complete or not, are gone and count for no quota.
async fn resume_and_expiry(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.blobs.ttl_secs = 1;
        c.blobs.max_file_bytes = 600_000;
        c.blobs.quota_bytes_per_account = 1_000_000;
    })
    .await;
    let alice = server.register("alice", 0).await;
    let bob = server.register("bob", 0).await;
    let bytes = data(500_000);
    let id = create(&alice, 500_000).await.unwrap().blob_id;

    // A raw request that promises 500000 bytes, sends 200000 and hangs up.
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head_text = format!(
        "PATCH /v1/blobs/{id} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         content-type: {BLOB_UPLOAD_CONTENT_TYPE}\r\n{UPLOAD_OFFSET}: 0\r\n\
         content-length: 500000\r\n\r\n",
        server.addr,
        alice.credential.as_ref().unwrap()
    );
    socket.write_all(head_text.as_bytes()).await.unwrap();
    socket.write_all(&bytes[..200_000]).await.unwrap();
    socket.flush().await.unwrap();
    socket.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
    drop(socket);

    // The server holds what arrived (once its handler has seen the end).
    let mut offset = None;
    for _ in 0..100 {
        offset = head(&alice, &id).await.1;
        if offset == Some(200_000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(offset, Some(200_000));
    assert_eq!(get(&bob, &id, None).await.0, StatusCode::NOT_FOUND);
    let mut at = offset.unwrap();
    // Resume in pieces, as a client would.
    for piece in bytes[200_000..].chunks(150_000) {
        at = patch(&alice, &id, at, piece).await.unwrap();
    }
    assert_eq!(at, 500_000);
    let (status, _, body) = get(&bob, &id, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == bytes, "the resumed blob differs");

    // After the TTL the blob is gone for every endpoint, and its reservation with it.
    let partial = create(&alice, 400_000).await.unwrap().blob_id;
    assert_eq!(patch(&alice, &partial, 0, &bytes[..10]).await.unwrap(), 10);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&bob, &id, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(head(&alice, &partial).await.0, StatusCode::NOT_FOUND);
    let (failure, _) = patch(&alice, &partial, 10, &[1]).await.unwrap_err();
    assert_eq!(failure.body.code, ErrorCode::NotFound);
    let r = alice
        .call_empty::<()>(Method::DELETE, &format!("/v1/blobs/{id}"), None)
        .await;
    assert_code(r, 404, ErrorCode::NotFound);
    create(&alice, 600_000).await.unwrap();
    server.stop().await;
}
both!(resume_and_expiry);
