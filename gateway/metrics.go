package gateway

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/therapistinbox/gateway/gateway/envelope"
)

// Metrics are the gateway's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	received       *prometheus.CounterVec
	receiveSeconds prometheus.Histogram
	sentTotal      *prometheus.CounterVec
	failedTotal    *prometheus.CounterVec
	ackLatency     prometheus.Histogram
	alertLatency   prometheus.Histogram
	escalations    *prometheus.CounterVec
	alertAcks      *prometheus.CounterVec
}

// NewMetrics registers the gateway's metrics with reg; the outbox gauges
// read s when scraped.
func NewMetrics(reg prometheus.Registerer, s *Store) *Metrics {
	latency := []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300}
	m := &Metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_messages_received_total",
			Help: "Inbound messages stored, by channel, verdict (urgent or routine) and the action taken.",
		}, []string{"channel", "verdict", "action"}),
		receiveSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gateway_receive_seconds",
			Help:    "Time for the dispatcher to store and decide one inbound message, commit included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		sentTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_outbox_sent_total",
			Help: "Outbound messages accepted by the provider, by channel and kind.",
		}, []string{"channel", "kind"}),
		failedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_outbox_failed_total",
			Help: "Outbound messages recorded as failed, by channel and kind.",
		}, []string{"channel", "kind"}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gateway_ack_latency_seconds",
			Help:    "From a client's message arriving to its acknowledgement being accepted by the provider.",
			Buckets: latency,
		}),
		alertLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gateway_alert_latency_seconds",
			Help:    "From an urgent message arriving to the on-call page being accepted by the provider.",
			Buckets: latency,
		}),
		escalations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_alert_escalations_total",
			Help: "Alert steps past the first page: to the next person (next), or to the whole chain and the therapist (everyone).",
		}, []string{"stage"}),
		alertAcks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_alert_acks_total",
			Help: "Alerts acknowledged, by how (sms or link).",
		}, []string{"via"}),
	}
	reg.MustRegister(m.received, m.receiveSeconds, m.sentTotal, m.failedTotal, m.ackLatency, m.alertLatency,
		m.escalations, m.alertAcks, outboxGauges{s})
	return m
}

func (m *Metrics) observeReceived(ch envelope.Channel, action string, d time.Duration) {
	if m == nil {
		return
	}
	verdict := "routine"
	if action == ActionUrgent {
		verdict = "urgent"
	}
	m.received.WithLabelValues(string(ch), verdict, action).Inc()
	m.receiveSeconds.Observe(d.Seconds())
}

func (m *Metrics) observeSent(j job, now time.Time) {
	if m == nil {
		return
	}
	m.sentTotal.WithLabelValues(string(j.m.Channel), string(j.m.Kind)).Inc()
	if j.msgAt.IsZero() {
		return
	}
	switch j.m.Kind {
	case envelope.KindAck, envelope.KindAckRepeat, envelope.KindUrgentReply:
		m.ackLatency.Observe(now.Sub(j.msgAt).Seconds())
	case envelope.KindOnCall:
		m.alertLatency.Observe(now.Sub(j.msgAt).Seconds())
	}
}

func (m *Metrics) observeEscalation(everyone bool) {
	if m == nil {
		return
	}
	stage := "next"
	if everyone {
		stage = "everyone"
	}
	m.escalations.WithLabelValues(stage).Inc()
}

func (m *Metrics) observeAck(via string) {
	if m == nil {
		return
	}
	m.alertAcks.WithLabelValues(via).Inc()
}

func (m *Metrics) observeFailed(o envelope.Outbound) {
	if m == nil {
		return
	}
	m.failedTotal.WithLabelValues(string(o.Channel), string(o.Kind)).Inc()
}

// outboxGauges reports the outbox backlog from the store at scrape time.
type outboxGauges struct{ s *Store }

var (
	pendingDesc    = prometheus.NewDesc("gateway_outbox_pending", "Outbound messages waiting to be sent or retried.", nil, nil)
	failedDesc     = prometheus.NewDesc("gateway_outbox_failed", "Outbound messages recorded as failed and not yet listed in a digest.", nil, nil)
	openAlertsDesc = prometheus.NewDesc("gateway_alerts_open", "Alerts nobody has acknowledged yet.", nil, nil)
)

func (g outboxGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- failedDesc
	ch <- openAlertsDesc
}

func (g outboxGauges) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var pending, failed, open int
	err := g.s.db.QueryRowContext(ctx, `
		SELECT count(*) FILTER (WHERE state IN ('pending', 'sending')),
			count(*) FILTER (WHERE `+failedDeliveries+`),
			(SELECT count(*) FROM alerts WHERE acked_at IS NULL)
		FROM outbox`).Scan(&pending, &failed, &open)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(pendingDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.GaugeValue, float64(failed))
	ch <- prometheus.MustNewConstMetric(openAlertsDesc, prometheus.GaugeValue, float64(open))
}
