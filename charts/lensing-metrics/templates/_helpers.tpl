{{/* Names */}}
{{- define "lensing-metrics.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lensing-metrics.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* <fullname>-<component>, kept within 63 characters. Call with (list $ "component"). */}}
{{- define "lensing-metrics.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "lensing-metrics.fullname" $root | trunc (int (sub 62 (len (index . 1))))) (index . 1) | trimSuffix "-" }}
{{- end }}

{{- define "lensing-metrics.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels */}}
{{- define "lensing-metrics.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lensing-metrics.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lensing-metrics.labels" -}}
helm.sh/chart: {{ include "lensing-metrics.chart" . }}
{{ include "lensing-metrics.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lensing-metrics
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Call with (list $ "component"). */}}
{{- define "lensing-metrics.componentSelectorLabels" -}}
{{ include "lensing-metrics.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "lensing-metrics.componentLabels" -}}
{{ include "lensing-metrics.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Image reference: digest wins over tag; the tag defaults to the appVersion. */}}
{{- define "lensing-metrics.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Security contexts: the chart-wide defaults with a component's overrides merged over them.
Call with (list $ .Values.<component>). */}}
{{- define "lensing-metrics.podSecurityContext" -}}
{{- $root := index . 0 }}
{{- toYaml (mergeOverwrite (deepCopy $root.Values.podSecurityContext) (index . 1).podSecurityContext) }}
{{- end }}

{{- define "lensing-metrics.containerSecurityContext" -}}
{{- $root := index . 0 }}
{{- toYaml (mergeOverwrite (deepCopy $root.Values.containerSecurityContext) (index . 1).containerSecurityContext) }}
{{- end }}

{{/* ServiceAccount names. Call with (list $ "component"). */}}
{{- define "lensing-metrics.serviceAccountName" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $sa := (index $root.Values $component).serviceAccount }}
{{- if $sa.create }}
{{- default (include "lensing-metrics.componentName" (list $root $component)) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* Broker Secret: the existing one, or the chart's. */}}
{{- define "lensing-metrics.brokerSecretName" -}}
{{- default (include "lensing-metrics.componentName" (list . "broker")) .Values.broker.existingSecret }}
{{- end }}

{{- define "lensing-metrics.brokerSecretKey" -}}
{{- if .Values.broker.existingSecret }}{{ .Values.broker.existingSecretKey }}{{ else }}broker-url{{ end }}
{{- end }}

{{- define "lensing-metrics.brokerConfigured" -}}
{{- if or .Values.broker.url .Values.broker.existingSecret }}true{{ end }}
{{- end }}

{{/* The broker's environment and arguments, shared by the exporter, the adapter and (optionally) the GPU collector. */}}
{{- define "lensing-metrics.brokerEnv" -}}
{{- include "lensing-metrics.brokerEnvNamed" (list . "CELERY_BROKER_URL") }}
{{- end }}

{{/* The broker URL from the Secret under another variable name. Call with (list $ "NAME"). */}}
{{- define "lensing-metrics.brokerEnvNamed" -}}
{{- $root := index . 0 }}
{{- if include "lensing-metrics.brokerConfigured" $root }}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "lensing-metrics.brokerSecretName" $root }}
      key: {{ include "lensing-metrics.brokerSecretKey" $root }}
{{- end }}
{{- end }}

{{- define "lensing-metrics.brokerArgs" -}}
{{- range .Values.broker.transportOptions }}
- --broker-transport-option={{ . }}
{{- end }}
{{- range .Values.broker.queues }}
- --queue={{ . }}
{{- end }}
{{- end }}

{{/* Adapter Service and its DNS names (the serving certificate carries all of them). */}}
{{- define "lensing-metrics.adapter.serviceName" -}}
{{- include "lensing-metrics.componentName" (list . "adapter") }}
{{- end }}

{{- define "lensing-metrics.adapter.dnsNames" -}}
{{- $svc := include "lensing-metrics.adapter.serviceName" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{- define "lensing-metrics.adapter.tlsSecretName" -}}
{{- if eq .Values.adapter.tls.mode "existingSecret" }}
{{- required "adapter.tls.existingSecret: name the kubernetes.io/tls Secret to use with tls.mode=existingSecret" .Values.adapter.tls.existingSecret }}
{{- else }}
{{- include "lensing-metrics.componentName" (list . "adapter-tls") }}
{{- end }}
{{- end }}

{{- define "lensing-metrics.adapter.certificateName" -}}
{{- include "lensing-metrics.componentName" (list . "adapter") }}
{{- end }}

{{/*
The generated CA and serving certificate (tls.mode=generated), as a dict {ca, crt, key} of PEM strings.
An existing Secret is read back with lookup and reused, so upgrades keep the certificate and the APIService's
caBundle stays valid. Computed once per render and memoised, so the Secret and the APIService agree.
*/}}
{{- define "lensing-metrics.adapter.generatedCerts" -}}
{{- if not (hasKey .Values "__lensingGeneratedCerts") }}
{{- $secretName := include "lensing-metrics.adapter.tlsSecretName" . }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName }}
{{- $certs := dict }}
{{- if and $existing $existing.data (index $existing.data "ca.crt") (index $existing.data "tls.crt") (index $existing.data "tls.key") }}
{{- $certs = dict "ca" (index $existing.data "ca.crt" | b64dec) "crt" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec) }}
{{- else }}
{{- $days := int .Values.adapter.tls.validityDays }}
{{- $ca := genCA (printf "%s-ca" (include "lensing-metrics.adapter.serviceName" .)) $days }}
{{- $dnsNames := include "lensing-metrics.adapter.dnsNames" . | fromJsonArray }}
{{- $cert := genSignedCert (printf "%s.%s.svc" (include "lensing-metrics.adapter.serviceName" .) .Release.Namespace) nil $dnsNames $days $ca }}
{{- $certs = dict "ca" $ca.Cert "crt" $cert.Cert "key" $cert.Key }}
{{- end }}
{{- $_ := set .Values "__lensingGeneratedCerts" $certs }}
{{- end }}
{{- toJson (index .Values "__lensingGeneratedCerts") }}
{{- end }}

{{/* The APIService caBundle (base64 PEM), or "" when cert-manager injects it or TLS verification is skipped. */}}
{{- define "lensing-metrics.adapter.caBundle" -}}
{{- $mode := .Values.adapter.tls.mode }}
{{- if .Values.adapter.apiService.insecureSkipTLSVerify }}
{{- else if eq $mode "generated" }}
{{- (include "lensing-metrics.adapter.generatedCerts" . | fromJson).ca | b64enc }}
{{- else if eq $mode "existingSecret" }}
{{- if .Values.adapter.tls.caBundle }}
{{- .Values.adapter.tls.caBundle }}
{{- else }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "lensing-metrics.adapter.tlsSecretName" .) }}
{{- $ca := "" }}
{{- if and $secret $secret.data }}{{ $ca = index $secret.data "ca.crt" | default "" }}{{ end }}
{{- required (printf "adapter.tls.caBundle: with tls.mode=existingSecret set it to the base64 PEM of the CA that signed Secret %s, or add ca.crt to that Secret (not found: lookup sees nothing under helm template)" (include "lensing-metrics.adapter.tlsSecretName" .)) $ca }}
{{- end }}
{{- end }}
{{- end }}

{{/* Checks of combinations the schema cannot express. */}}
{{- define "lensing-metrics.validate" -}}
{{- if and (or .Values.exporter.enabled .Values.adapter.enabled) (not (include "lensing-metrics.brokerConfigured" .)) }}
{{- fail "broker: set broker.url or broker.existingSecret (the exporter and the adapter read the Celery broker)" }}
{{- end }}
{{- if and .Values.adapter.enabled .Values.adapter.customMetrics.enabled (not .Values.adapter.customMetrics.prometheusUrl) }}
{{- fail "adapter.customMetrics.prometheusUrl: set the Prometheus URL the custom.metrics.k8s.io API reads, e.g. http://kube-prometheus-stack-prometheus.monitoring.svc:9090" }}
{{- end }}
{{- if and .Values.apiHPA.enabled (not (and .Values.adapter.enabled .Values.adapter.customMetrics.enabled)) }}
{{- fail "apiHPA: its Pods metric is served by the adapter's custom.metrics.k8s.io: set adapter.enabled and adapter.customMetrics.enabled, or leave apiHPA off" }}
{{- end }}
{{- if and .Values.apiHPA.enabled (gt (int .Values.apiHPA.minReplicas) (int .Values.apiHPA.maxReplicas)) }}
{{- fail (printf "apiHPA: minReplicas %d is above maxReplicas %d" (int .Values.apiHPA.minReplicas) (int .Values.apiHPA.maxReplicas)) }}
{{- end }}
{{- if and .Values.workerHPA.enabled (gt (int .Values.workerHPA.minReplicas) (int .Values.workerHPA.maxReplicas)) }}
{{- fail (printf "workerHPA: minReplicas %d is above maxReplicas %d" (int .Values.workerHPA.minReplicas) (int .Values.workerHPA.maxReplicas)) }}
{{- end }}
{{- end }}

{{/* prometheus-operator objects render when the API is served or when forced. */}}
{{- define "lensing-metrics.monitoringEnabled" -}}
{{- if or .Values.monitoring.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}true{{ end }}
{{- end }}

{{- define "lensing-metrics.monitoringLabels" -}}
{{- with .Values.monitoring.additionalLabels }}{{ toYaml . }}{{ end }}
{{- end }}

{{/* Lower-case DNS-1123 name fragment of a file name. */}}
{{- define "lensing-metrics.fileSlug" -}}
{{- . | base | trimSuffix (ext .) | lower | regexReplaceAll "[^a-z0-9-]+" "-" | trimAll "-" }}
{{- end }}

{{/*
A rule file of files/alerts/ as the PrometheusRule's spec, with the values' rewrites (monitoring.rules):
runbook and dashboard base URLs replaced in the annotations, lensing:alert_threshold values set by name and
per-queue backlog thresholds appended. Without rewrites the file's text is used as it is.
Call with (list $ <file content>).
*/}}
{{- define "lensing-metrics.ruleSpec" -}}
{{- $root := index . 0 }}
{{- $content := index . 1 }}
{{- $r := $root.Values.monitoring.rules }}
{{- with $r.runbookBaseUrl }}
{{- $content = $content | replace "runbook_url: https://github.com/lensing/lensing-metrics/blob/main/docs/runbook.md" (printf "runbook_url: %s" .) }}
{{- end }}
{{- with $r.dashboardBaseUrl }}
{{- $content = $content | replace "dashboard_url: https://grafana.example.com/" (printf "dashboard_url: %s/" .) }}
{{- end }}
{{- if or $r.thresholds $r.queueBacklogHigh }}
{{- $parsed := $content | fromYaml }}
{{- $seen := dict }}
{{- range $group := $parsed.groups }}
{{- $isThresholds := false }}
{{- range $rule := $group.rules }}
{{- if eq (dig "record" "" $rule) "lensing:alert_threshold" }}
{{- $isThresholds = true }}
{{- $name := dig "labels" "threshold" "" $rule }}
{{- if and (hasKey $r.thresholds $name) (not (dig "labels" "queue" "" $rule)) }}
{{- $_ := set $rule "expr" (printf "vector(%v)" (index $r.thresholds $name)) }}
{{- $_ := set $seen $name true }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $isThresholds $r.queueBacklogHigh }}
{{- $rules := $group.rules }}
{{- range $queue := keys $r.queueBacklogHigh | sortAlpha }}
{{- $rules = append $rules (dict "record" "lensing:alert_threshold" "expr" (printf "vector(%v)" (index $r.queueBacklogHigh $queue)) "labels" (dict "threshold" "queue_backlog_high" "queue" $queue)) }}
{{- end }}
{{- $_ := set $group "rules" $rules }}
{{- $_ := set $seen "queueBacklogHigh" true }}
{{- end }}
{{- end }}
{{- $_ := set $root.Values "__lensingThresholdsSeen" (merge (default dict (index $root.Values "__lensingThresholdsSeen")) $seen) }}
{{- toYaml $parsed }}
{{- else }}
{{- $content | trim }}
{{- end }}
{{- end }}

{{/* Every threshold set in monitoring.rules must have been found in a rule file (call after rendering them). */}}
{{- define "lensing-metrics.checkThresholds" -}}
{{- $r := .Values.monitoring.rules }}
{{- $seen := default dict (index .Values "__lensingThresholdsSeen") }}
{{- range $name := keys $r.thresholds | sortAlpha }}
{{- if not (hasKey $seen $name) }}
{{- fail (printf "monitoring.rules.thresholds.%s: no lensing:alert_threshold{threshold=%q} recording rule in files/alerts/" $name $name) }}
{{- end }}
{{- end }}
{{- if and $r.queueBacklogHigh (not (hasKey $seen "queueBacklogHigh")) }}
{{- fail "monitoring.rules.queueBacklogHigh: no lensing:alert_threshold recording rules in files/alerts/ to add to" }}
{{- end }}
{{- end }}

{{/* The group versions the helm test asks the aggregation layer for, as a Python list literal. */}}
{{- define "lensing-metrics.testGroupVersions" -}}
{{- $gvs := list }}
{{- if .Values.adapter.apiService.enabled }}{{ $gvs = append $gvs "external.metrics.k8s.io/v1beta1" }}{{ end }}
{{- if .Values.adapter.customMetrics.enabled }}
{{- $gvs = concat $gvs (list "custom.metrics.k8s.io/v1beta2" "custom.metrics.k8s.io/v1beta1") }}
{{- end }}
{{- toJson $gvs }}
{{- end }}

{{/*
A component's ServiceAccount, when the component is enabled and serviceAccount.create is set.
Call with (list $ <component>): exporter, gpu or adapter.
*/}}
{{- define "lensing-metrics.serviceAccount" -}}
{{- $ := index . 0 }}
{{- $component := index . 1 }}
{{- $values := index $.Values $component }}
{{- if and $values.enabled $values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "lensing-metrics.serviceAccountName" (list $ $component) }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "lensing-metrics.componentLabels" (list $ $component) | nindent 4 }}
  {{- with $values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- /* the adapter calls the API (TokenReview, SubjectAccessReview); the exporters do not */}}
automountServiceAccountToken: {{ if eq $component "adapter" }}true{{ else }}{{ $values.serviceAccount.automountServiceAccountToken }}{{ end }}
{{- end }}
{{- end }}

{{/*
The NetworkPolicy of a metrics endpoint (exporter or gpu): ingress to its port only, from networkPolicy.metricsFrom.
Call with (list $ <component>).
*/}}
{{- define "lensing-metrics.metricsNetworkPolicy" -}}
{{- $ := index . 0 }}
{{- $component := index . 1 }}
{{- $np := $.Values.networkPolicy }}
{{- $v := index $.Values $component }}
{{- if and $np.enabled $v.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "lensing-metrics.componentName" (list $ $component) }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "lensing-metrics.componentLabels" (list $ $component) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "lensing-metrics.componentSelectorLabels" (list $ $component) | nindent 6 }}
  policyTypes:
    - Ingress
  ingress:
    - ports:
        - port: {{ $v.port }}
          protocol: TCP
      {{- with $np.metricsFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end }}

{{/* The worker pods' namespace: adapter.podDeletionCost.namespace, else workerHPA.namespace, else the release's. */}}
{{- define "lensing-metrics.workerNamespace" -}}
{{- .Values.adapter.podDeletionCost.namespace | default .Values.workerHPA.namespace | default .Release.Namespace -}}
{{- end }}
