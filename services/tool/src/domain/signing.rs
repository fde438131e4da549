//! AWS Signature Version 4 over a prepared request, with the official signing crate:
//! the headers it adds (`authorization`, `x-amz-date`, `x-amz-content-sha256`, and
//! `x-amz-security-token` for temporary keys) for the request exactly as it is sent.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;

use crate::domain::credentials::AwsKeys;
use crate::domain::request::PreparedRequest;

/// The headers that sign `request` for `service` at `now`.
pub fn aws_headers(
    request: &PreparedRequest,
    keys: &AwsKeys,
    service: &str,
    now: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity = Credentials::new(
        &keys.access_key_id,
        &keys.secret_access_key,
        keys.session_token.clone(),
        None,
        "tenant",
    )
    .into();
    let mut settings = SigningSettings::default();
    if service == "s3" {
        // S3 signs the path as sent (encoded once, `..` kept) and the payload's hash
        // travels in its own header.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&keys.region)
        .name(service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| format!("the AWS signature cannot be made: {e}"))?
        .into();
    let body = request.encoded_body();
    let mut headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Some((_, media)) = &body {
        headers.push(("content-type", media.as_str()));
    }
    let bytes = body.as_ref().map_or(&[][..], |(b, _)| b.as_slice());
    let signable = SignableRequest::new(
        &request.method,
        request.url.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(bytes),
    )
    .map_err(|e| format!("the request cannot be signed: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("the request cannot be signed: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The signature AWS's own documentation shows for `GET /?Action=ListUsers` on IAM
    /// with its example keys (the SigV4 "create a signed request" walkthrough).
    #[test]
    fn the_documented_example_signs_alike() {
        let keys = AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            region: "us-east-1".into(),
        };
        let request = PreparedRequest {
            method: "GET".into(),
            url: url::Url::parse("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08")
                .unwrap(),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            body: None,
            raw_body: false,
            content_type: None,
        };
        // 20150830T123600Z
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let headers = aws_headers(&request, &keys, "iam", at).unwrap();
        let auth = &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "x-amz-date" && v == "20150830T123600Z")
        );
    }
}
