package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/chargeflow/chargeflow/payscore"
)

// replayTransport answers every request with the same signed reply, in
// memory: the payscore scenario measures the client, not a network.
type replayTransport struct{ reply []byte }

func (t replayTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json;charset=UTF-8"}}, ContentLength: int64(len(t.reply)),
		Body: io.NopCloser(bytes.NewReader(t.reply)), Request: r}, nil
}

// benchPayScore: payscore.Client.Call (canonical JSON, RSA-2048 signature,
// envelope, reply parsing, RSA verification of the reply) against an
// in-memory transport, beside the bare RSA-2048 PKCS#1 v1.5 SHA-256 sign of
// the same request bytes and verify of the same reply bytes.
func benchPayScore(ctx context.Context, b *bench) {
	const name = "payscore.sign+verify"
	merchant, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.fail(name, err)
		return
	}
	huifu, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.fail(name, err)
		return
	}
	data := map[string]string{
		"huifu_id": "6666000100000001", "notify_url": "https://cf.example/notify/huifu/payscore", "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
		"req_date": "20261126", "req_seq_id": "CR0001bench0000000000000000000000", "risk_fund": `{"name":"ESTIMATE_ORDER_COST","amount":5000}`,
		"service_introduction": "电动汽车充电", "time_range": `{"start_time":"OnAccept"}`, "service_id": "sandbox-service",
	}
	request, err := payscore.CanonicalJSON(data)
	if err != nil {
		b.fail(name, err)
		return
	}
	replyData, err := payscore.CanonicalJSON(map[string]string{"resp_code": "00000000", "resp_desc": "成功",
		"huifu_id": data["huifu_id"], "req_seq_id": data["req_seq_id"], "req_date": data["req_date"],
		"out_order_no": "BENCHORDER00000001", "service_id": "sandbox-service", "state": "CREATED",
		"package": "DJIOSQPYWDxsdfsdfsdf123aBDOEKoj"})
	if err != nil {
		b.fail(name, err)
		return
	}
	huifuSigner := payscore.NewRSASigner(huifu)
	replySig, err := huifuSigner.Sign(replyData)
	if err != nil {
		b.fail(name, err)
		return
	}
	reply, err := json.Marshal(map[string]any{"data": json.RawMessage(replyData), "sign": replySig})
	if err != nil {
		b.fail(name, err)
		return
	}
	client, err := payscore.New(payscore.Config{BaseURL: "http://huifu.invalid", SysID: "6666000100000000", ProductID: "PAYUN",
		HuifuID: data["huifu_id"], Signer: payscore.NewRSASigner(merchant), Verifier: payscore.NewRSAVerifier(&huifu.PublicKey),
		HTTPClient: &http.Client{Transport: replayTransport{reply: reply}}, MaxSends: 1})
	if err != nil {
		b.fail(name, err)
		return
	}
	rawSig, err := base64.StdEncoding.DecodeString(replySig)
	if err != nil {
		b.fail(name, err)
		return
	}
	f, base, err := alternate(ctx, b.duration,
		func() error { return client.Call(ctx, payscore.PathCreateOrder, data, nil) },
		func() error {
			sum := sha256.Sum256(request)
			if _, err := rsa.SignPKCS1v15(rand.Reader, merchant, crypto.SHA256, sum[:]); err != nil {
				return err
			}
			sum = sha256.Sum256(replyData)
			return rsa.VerifyPKCS1v15(&huifu.PublicKey, crypto.SHA256, sum[:], rawSig)
		})
	if err != nil {
		b.fail(name, err)
		return
	}
	b.emit(benchRow{Scenario: name, Figure: f.rate(), Unit: "Call/s (in-memory reply)", Ops: f.ops,
		Baseline: base.rate(), BaselineUnit: "raw RSA-2048 sign+verify/s", BaselineOps: base.ops,
		Notes: fmt.Sprintf("one goroutine; request %d bytes, reply data %d bytes", len(request), len(replyData))})
}
