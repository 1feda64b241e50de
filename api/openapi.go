package api

import (
	"github.com/chargeflow/chargeflow/fsm"
)

// The OpenAPI 3.1 document of the API, written as Go data so that it
// compiles with the code it describes; TestOpenAPIMatchesRoutes walks the
// router and checks both ways that every route is documented and every
// documented operation is routed.

type obj = map[string]any

func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

func str(desc string) obj { return obj{"type": "string", "description": desc} }

func integer(desc string) obj { return obj{"type": "integer", "format": "int64", "description": desc} }

func timeOrNull(desc string) obj {
	return obj{"type": []string{"string", "null"}, "format": "date-time", "description": desc + " (RFC 3339)"}
}

func arrayOf(items obj) obj { return obj{"type": "array", "items": items} }

func object(required []string, props obj) obj {
	o := obj{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}

func jsonBody(schema string) obj {
	return obj{"required": true, "content": obj{"application/json": obj{"schema": ref(schema)}}}
}

func jsonResponse(desc, schema string) obj {
	return obj{"description": desc, "content": obj{"application/json": obj{"schema": ref(schema)}}}
}

func problemResponse(desc string) obj {
	return obj{"description": desc, "content": obj{"application/problem+json": obj{"schema": ref("Problem")}}}
}

func textResponse(desc string) obj {
	return obj{"description": desc, "content": obj{"text/plain": obj{"schema": obj{"type": "string"}}}}
}

var (
	pathID        = obj{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string"}}
	queryLimit    = obj{"name": "limit", "in": "query", "schema": obj{"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}
	queryCursor   = obj{"name": "cursor", "in": "query", "description": "next_cursor of the previous page", "schema": obj{"type": "string"}}
	security      = []obj{{"bearer": []string{}}}
	noSecurity    = []obj{}
	authProblems  = obj{"401": ref401, "403": ref403}
	ref401        = obj{"$ref": "#/components/responses/Unauthorized"}
	ref403        = obj{"$ref": "#/components/responses/Forbidden"}
	ref400        = obj{"$ref": "#/components/responses/Invalid"}
	ref404        = obj{"$ref": "#/components/responses/NotFound"}
	ref409        = obj{"$ref": "#/components/responses/Conflict"}
	ref413        = obj{"$ref": "#/components/responses/TooLarge"}
	ref415        = obj{"$ref": "#/components/responses/UnsupportedMediaType"}
	ref503        = obj{"$ref": "#/components/responses/Unavailable"}
	bodyProblems  = obj{"400": ref400, "413": ref413, "415": ref415}
	stateNames    = func() []string { return names(fsm.States) }()
	flagNames     = func() []string { return names(fsm.Flags) }()
	problemCodes  = []string{"invalid", "not_found", "conflict", "unauthorized", "forbidden", "unavailable", "payment_refused", "internal"}
	sessionAppTag = []string{"sessions"}
)

func names[T ~string](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	return out
}

// responses merges response maps (later wins).
func responses(ms ...obj) obj {
	out := obj{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func op(summary string, tags []string, sec []obj, params []obj, body obj, resp obj) obj {
	o := obj{"summary": summary, "tags": tags, "security": sec, "responses": resp}
	if len(params) > 0 {
		o["parameters"] = params
	}
	if body != nil {
		o["requestBody"] = body
	}
	return o
}

func sessionActionOp(summary, role string, status, desc string, body obj) obj {
	resp := responses(authProblems, obj{status: jsonResponse(desc, "Session"), "404": ref404, "409": ref409})
	if body != nil {
		resp = responses(resp, bodyProblems)
	}
	return op(summary+" (role "+role+")", sessionAppTag, security, []obj{pathID}, body, resp)
}

// withParam adds a parameter to an operation.
func withParam(o obj, p obj) obj {
	params, _ := o["parameters"].([]obj)
	o["parameters"] = append(append([]obj{}, params...), p)
	return o
}

// openAPIDocument returns the document; extra lists the mounted extra
// patterns (documented as GET).
func openAPIDocument(extra []string) obj {
	paths := obj{
		"/healthz": obj{"get": op("The process is up", []string{"operations"}, noSecurity, nil, nil,
			obj{"200": textResponse("ok")})},
		"/readyz": obj{"get": op("Store, broker and payment configuration are usable", []string{"operations"}, noSecurity, nil, nil,
			obj{"200": textResponse("ready"), "503": ref503})},
		"/openapi.json": obj{"get": op("This document", []string{"operations"}, noSecurity, nil, nil,
			obj{"200": obj{"description": "the OpenAPI document", "content": obj{"application/json": obj{"schema": obj{"type": "object"}}}}})},
		"/notify/huifu/payscore": obj{"post": op("Huifu's Pay Score notifications (RSA-signed form; no bearer token)", []string{"payment provider"}, noSecurity, nil,
			obj{"required": true, "content": obj{"application/x-www-form-urlencoded": obj{"schema": object([]string{"resp_data", "sign"}, obj{
				"resp_data": str("the notification's JSON, signed as received"),
				"sign":      str("Huifu's RSA-SHA256 signature over resp_data, base64"),
			})}}},
			obj{
				"200": textResponse("applied: the body is exactly RECV_ORD_ID_<req_seq_id>"),
				"400": textResponse("verified but not decodable"),
				"401": textResponse("no or bad signature: nothing was applied"),
				"405": textResponse("not POST"),
				"413": textResponse("body too large"),
				"500": textResponse("not applied: Huifu sends it again"),
			})},
		"/v1/sessions": obj{
			"post": op("Start a session: creates the Pay Score order (role app)", sessionAppTag, security,
				[]obj{{"name": "Idempotency-Key", "in": "header", "required": true,
					"description": "unique per intended session; a retry with the same key and body gets the same answer",
					"schema":      obj{"type": "string", "minLength": 1, "maxLength": maxIdempotencyKey}}},
				jsonBody("CreateSessionRequest"),
				responses(authProblems, bodyProblems, obj{
					"201": obj{"description": "created, in state created; the user confirms in WeChat with `package`",
						"headers": obj{"Location": obj{"schema": obj{"type": "string"}}},
						"content": obj{"application/json": obj{"schema": ref("Session")}}},
					"404": ref404, "409": ref409, "503": ref503,
					"502": problemResponse("payment_refused: Pay Score refused the order"),
				})),
			"get": op("List sessions, newest first (role operator)", sessionAppTag, security, []obj{
				{"name": "state", "in": "query", "schema": obj{"type": "string", "enum": stateNames}},
				{"name": "charger_id", "in": "query", "schema": obj{"type": "string"}},
				{"name": "flag", "in": "query", "schema": obj{"type": "string", "enum": flagNames}},
				queryLimit, queryCursor,
			}, nil, responses(authProblems, obj{"200": jsonResponse("one page; the end is next_cursor == \"\"", "SessionList"), "400": ref400})),
		},
		"/v1/sessions/{id}": obj{"get": op("A session with its history (role app)", sessionAppTag, security, []obj{pathID}, nil,
			responses(authProblems, obj{"200": jsonResponse("the session", "Session"), "404": ref404}))},
		"/v1/sessions/{id}/stop": obj{"post": sessionActionOp("Stop charging", "app", "202", "stopping: the charger is told", nil)},
		"/v1/sessions/{id}/cancel": obj{"post": sessionActionOp("Cancel before charging (409 once charging started)", "app", "200",
			"cancelled", nil)},
		"/v1/sessions/{id}/close": obj{"post": sessionActionOp("End a stuck session by hand (audited; flagged closed_by_operator)",
			"operator", "200", "closed: billed for what was measured, or cancelled", jsonBody("CloseRequest"))},
		"/v1/sessions/{id}/deduct": obj{"post": sessionActionOp("Try the debit now", "operator", "202",
			"a deduction attempt was started", nil)},
		"/v1/sessions/{id}/refund": obj{"post": withParam(sessionActionOp("Refund (part of) a paid session", "operator", "202",
			"the refund is pending in refunds[]", jsonBody("RefundRequest")),
			obj{"name": "Idempotency-Key", "in": "header", "required": false,
				"description": "optional: a repeated request with the same key asks for no second refund",
				"schema":      obj{"type": "string", "maxLength": 255}})},
		"/v1/chargers": obj{"get": op("List chargers (role operator)", []string{"chargers"}, security, nil, nil,
			responses(authProblems, obj{"200": jsonResponse("every charger", "ChargerList")}))},
		"/v1/chargers/{id}": obj{
			"get": op("A charger (role operator)", []string{"chargers"}, security, []obj{pathID}, nil,
				responses(authProblems, obj{"200": jsonResponse("the charger", "Charger"), "404": ref404})),
			"put": op("Register or update a charger (role operator)", []string{"chargers"}, security, []obj{pathID},
				jsonBody("ChargerRequest"), responses(authProblems, bodyProblems, obj{"200": jsonResponse("the charger", "Charger")})),
		},
		"/v1/tariffs": obj{"get": op("List tariffs (role operator)", []string{"tariffs"}, security, nil, nil,
			responses(authProblems, obj{"200": jsonResponse("every tariff", "TariffList")}))},
		"/v1/tariffs/{id}": obj{
			"get": op("A tariff (role operator)", []string{"tariffs"}, security, []obj{pathID}, nil,
				responses(authProblems, obj{"200": jsonResponse("the tariff", "Tariff"), "404": ref404})),
			"put": op("Create or replace a tariff; new sessions use it (role operator)", []string{"tariffs"}, security, []obj{pathID},
				jsonBody("TariffRequest"), responses(authProblems, bodyProblems, obj{"200": jsonResponse("the tariff", "Tariff")})),
		},
		"/v1/anomalies": obj{"get": op("Messages that could not be used, newest first (role operator)", []string{"operations"}, security,
			[]obj{queryLimit, queryCursor}, nil,
			responses(authProblems, obj{"200": jsonResponse("one page", "AnomalyList"), "400": ref400}))},
		"/v1/stats": obj{"get": op("Counters for the board (role operator)", []string{"operations"}, security, nil, nil,
			responses(authProblems, obj{"200": jsonResponse("counters", "Stats")}))},
		"/v1/events": obj{"get": op("Live feed of changes as Server-Sent Events (role operator)", []string{"operations"}, security,
			[]obj{
				{"name": "Last-Event-ID", "in": "header", "description": "resume after this event id, without gaps", "schema": obj{"type": "string"}},
				{"name": "last_event_id", "in": "query", "description": "as Last-Event-ID, for the first connection of an EventSource", "schema": obj{"type": "string"}},
				{"name": "access_token", "in": "query", "description": "the bearer token, for EventSource (which cannot send headers)", "schema": obj{"type": "string"}},
			}, nil,
			responses(authProblems, obj{
				"200": obj{"description": "`event: session` or `event: charger`, `id:` the change id, `data:` the Session or Charger view; `: ping` comments as heartbeat",
					"content": obj{"text/event-stream": obj{"schema": obj{"type": "string"}}}},
				"400": ref400,
			}))},
	}
	for _, p := range extra {
		paths[openAPIPath(p)] = obj{"get": op("Mounted by the service: "+p, []string{"operations"}, noSecurity, nil, nil,
			obj{"200": obj{"description": "see the service's documentation"}})}
	}

	problem := func(desc string) obj { return problemResponse(desc) }
	return obj{
		"openapi": "3.1.0",
		"info": obj{
			"title":   "chargeflow API",
			"version": "1",
			"description": "The HTTP API of chargeflow (docs/service.md §3). Errors are RFC 9457 problem documents " +
				"whose `type` is " + ProblemTypeBase + "<code> and whose `code` member is one of " +
				"invalid, not_found, conflict, unauthorized, forbidden, unavailable, payment_refused, internal. " +
				"Times are RFC 3339; money is integer fen.",
		},
		"tags":  []obj{{"name": "sessions"}, {"name": "chargers"}, {"name": "tariffs"}, {"name": "operations"}, {"name": "payment provider"}},
		"paths": paths,
		"components": obj{
			"securitySchemes": obj{"bearer": obj{"type": "http", "scheme": "bearer",
				"description": "Authorization: Bearer <token>; tokens of the app role or the operator role (an operator may do everything an app may)"}},
			"responses": obj{
				"Invalid":              problem("invalid: the request is not valid; `errors` names the fields"),
				"Unauthorized":         problem("unauthorized: missing or unknown token (WWW-Authenticate: Bearer)"),
				"Forbidden":            problem("forbidden: the token's role may not do this"),
				"NotFound":             problem("not_found"),
				"Conflict":             problem("conflict: not allowed in the session's current state, busy, or an Idempotency-Key reused"),
				"TooLarge":             problem("invalid: the body is too large"),
				"UnsupportedMediaType": problem("invalid: the body must be application/json"),
				"Unavailable":          problem("unavailable: try again (same Idempotency-Key)"),
			},
			"schemas": schemas(),
		},
	}
}

// openAPIPath turns a chi pattern into an OpenAPI path ("/assets/*" stays).
func openAPIPath(p string) string { return p }

func schemas() obj {
	fen := func(desc string) obj {
		return obj{"type": "integer", "format": "int64", "description": desc + " (fen)"}
	}
	return obj{
		"Problem": object([]string{"type", "title", "status", "detail", "code"}, obj{
			"type":       obj{"type": "string", "format": "uri", "description": ProblemTypeBase + "<code>"},
			"title":      str("short summary of the code"),
			"status":     obj{"type": "integer"},
			"detail":     str("what went wrong, for humans"),
			"code":       obj{"type": "string", "enum": problemCodes},
			"instance":   str("the request path"),
			"errors":     obj{"type": "object", "additionalProperties": obj{"type": "string"}, "description": "field → message (code invalid)"},
			"request_id": str("the X-Request-Id of the request"),
		}),
		"CreateSessionRequest": object([]string{"charger_id", "connector", "openid", "max_amount_fen"}, obj{
			"charger_id":     str("a registered charger"),
			"connector":      obj{"type": "integer", "minimum": 1},
			"openid":         str("the user's WeChat openid"),
			"max_amount_fen": obj{"type": "integer", "minimum": 1, "description": "spending cap, also the Pay Score risk fund (fen)"},
		}),
		"CloseRequest":  object([]string{"reason"}, obj{"reason": str("why the session is closed (audited)")}),
		"RefundRequest": object([]string{"amount_fen", "reason"}, obj{"amount_fen": obj{"type": "integer", "minimum": 1}, "reason": str("")}),
		"ChargerRequest": object([]string{"connectors"}, obj{
			"connectors": arrayOf(obj{"type": "integer", "minimum": 1}),
			"tariff_id":  obj{"type": "string", "default": "default"},
			"password":   obj{"type": "string", "minLength": 8, "description": "for the embedded broker; stored hashed"},
		}),
		"Period": object([]string{"from", "to", "energy_fen_per_kwh", "service_fen_per_kwh"}, obj{
			"from":                obj{"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$", "description": "local Beijing time"},
			"to":                  obj{"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$", "description": "\"24:00\" ends the day"},
			"energy_fen_per_kwh":  obj{"type": "integer", "minimum": 0},
			"service_fen_per_kwh": obj{"type": "integer", "minimum": 0},
		}),
		"TariffRequest": object([]string{"periods"}, obj{"periods": arrayOf(ref("Period"))}),
		"Tariff":        object([]string{"id", "periods"}, obj{"id": str(""), "periods": arrayOf(ref("Period"))}),
		"TariffList":    object([]string{"tariffs"}, obj{"tariffs": arrayOf(ref("Tariff"))}),
		"Line":          object(nil, obj{"name": str("电费 or 服务费"), "amount_fen": fen("amount"), "energy_wh": integer("")}),
		"HistoryEntry": object([]string{"at", "from", "to", "event", "by"}, obj{
			"at":    obj{"type": "string", "format": "date-time"},
			"from":  obj{"type": "string", "description": "empty for the creation"},
			"to":    obj{"type": "string", "enum": stateNames},
			"event": str("the event that fired"),
			"by":    str("app, operator:<name>, charger, payscore or timer"),
			"note":  str(""),
		}),
		"Payment": object(nil, obj{
			"attempts": obj{"type": "integer"}, "failures": obj{"type": "integer"}, "registered": obj{"type": "boolean"},
			"out_trade_no": str(""), "last_failure": str(""), "paid_fen": fen("paid"), "by_user": obj{"type": "boolean"},
			"hf_seq_id": str(""), "req_date": str(""),
		}),
		"Refund": object(nil, obj{
			"id": str(""), "amount_fen": fen("refunded"), "reason": str(""), "by": str(""),
			"at": obj{"type": "string", "format": "date-time"}, "status": obj{"type": "string", "enum": []string{"pending", "succeeded", "failed"}},
		}),
		"Live":  object(nil, obj{"last_meter_wh": integer(""), "last_meter_at": timeOrNull(""), "energy_wh": integer(""), "amount_fen": fen("so far")}),
		"Timer": object(nil, obj{"id": str(""), "kind": str(""), "due_at": obj{"type": "string", "format": "date-time"}}),
		"Session": object([]string{"id", "state", "flags", "charger_id", "connector", "openid", "out_order_no", "max_amount_fen",
			"energy_wh", "amount_fen", "lines", "tariff", "created_at", "payment", "refunds", "history"}, obj{
			"id":             str("session id"),
			"state":          obj{"type": "string", "enum": stateNames},
			"cancel_reason":  str("why a cancelled session was cancelled"),
			"flags":          arrayOf(obj{"type": "string", "enum": flagNames}),
			"charger_id":     str(""),
			"connector":      obj{"type": "integer"},
			"openid":         str(""),
			"out_order_no":   str("the Pay Score service order"),
			"package":        str("for wx.openBusinessView"),
			"max_amount_fen": fen("spending cap"),
			"max_energy_wh":  integer("the charger stops by itself here"),
			"energy_wh":      integer("billed energy"),
			"amount_fen":     fen("billed amount"),
			"lines":          arrayOf(ref("Line")),
			"tariff":         ref("Tariff"),
			"created_at":     timeOrNull("created"),
			"confirmed_at":   timeOrNull("the user confirmed"),
			"started_at":     timeOrNull("charging started"),
			"ended_at":       timeOrNull("charging ended"),
			"end_time":       timeOrNull("end_time sent to Pay Score"),
			"paid_at":        timeOrNull("paid"),
			"updated_at":     timeOrNull("last change"),
			"payment":        ref("Payment"),
			"refunds":        arrayOf(ref("Refund")),
			"history":        arrayOf(ref("HistoryEntry")),
			"version":        integer("increases with every change"),
			"live":           ref("Live"),
			"timers":         arrayOf(ref("Timer")),
		}),
		"SessionList": object([]string{"sessions", "next_cursor"}, obj{
			"sessions":    arrayOf(obj{"$ref": "#/components/schemas/Session", "description": "without history"}),
			"next_cursor": str("\"\" at the end"),
		}),
		"Connector": object([]string{"id", "status"}, obj{"id": obj{"type": "integer"}, "status": str("last reported status"),
			"session": str("the active session on this connector")}),
		"Charger": object([]string{"id", "connectors", "tariff_id", "online", "has_password"}, obj{
			"id": str(""), "connectors": arrayOf(ref("Connector")), "tariff_id": str(""), "online": obj{"type": "boolean"},
			"boot_id": str(""), "model": str(""), "fw": str(""), "last_heard_at": timeOrNull(""), "has_password": obj{"type": "boolean"},
		}),
		"ChargerList": object([]string{"chargers"}, obj{"chargers": arrayOf(ref("Charger"))}),
		"Anomaly": object([]string{"id", "at", "reason"}, obj{
			"id": str(""), "at": obj{"type": "string", "format": "date-time"}, "charger_id": str(""), "session_id": str(""),
			"topic": str(""), "payload": obj{"type": "string", "contentEncoding": "base64"}, "reason": str(""),
		}),
		"AnomalyList": object([]string{"anomalies", "next_cursor"}, obj{"anomalies": arrayOf(ref("Anomaly")), "next_cursor": str("")}),
		"Stats": object([]string{"sessions", "total", "active", "outbox"}, obj{
			"sessions": obj{"type": "object", "additionalProperties": obj{"type": "integer"}, "description": "state → count, every state present"},
			"total":    obj{"type": "integer"},
			"active":   obj{"type": "integer"},
			"outbox": object(nil, obj{"pending": obj{"type": "integer"}, "due_now": obj{"type": "integer"},
				"oldest_due": timeOrNull("")}),
		}),
	}
}
