{{/* Names, labels, addresses and the checks that refuse values which cannot work. */}}

{{- define "joule.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "joule.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "joule.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "joule.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "joule.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "joule.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: joule
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "scheduler"). */}}
{{- define "joule.selector" -}}
app.kubernetes.io/name: {{ include "joule.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "joule.cpuImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "joule.gpuImage" -}}
{{- printf "%s:%s" .Values.gpuImage.repository (default .Chart.AppVersion .Values.gpuImage.tag) -}}
{{- end -}}

{{- define "joule.tokensSecret" -}}
{{- default (printf "%s-tokens" (include "joule.fullname" .)) .Values.tokens.existingSecret -}}
{{- end -}}

{{- define "joule.tlsSecret" -}}
{{- default (printf "%s-tls" (include "joule.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "joule.headless" -}}
{{- printf "%s-scheduler-headless" (include "joule.fullname" .) -}}
{{- end -}}

{{/* HOST:PORT of scheduler replica i (0-based). */}}
{{- define "joule.schedulerHost" -}}
{{- printf "%s-scheduler-%d.%s.%s.svc.cluster.local" (include "joule.fullname" .ctx) (int .i) (include "joule.headless" .ctx) .ctx.Release.Namespace -}}
{{- end -}}

{{/* --peers: 1=HOST:PORT,2=... (ids start at 1; replica i has id i+1). */}}
{{- define "joule.peers" -}}
{{- $ctx := . -}}
{{- $out := list -}}
{{- range $i := until (int .Values.scheduler.replicas) -}}
{{- $out = append $out (printf "%d=%s:%d" (add $i 1) (include "joule.schedulerHost" (dict "ctx" $ctx "i" $i)) (int $ctx.Values.scheduler.port)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* Every replica, HOST:PORT,... (what workers, gateways and joulectl are given). */}}
{{- define "joule.schedulers" -}}
{{- $ctx := . -}}
{{- $out := list -}}
{{- range $i := until (int .Values.scheduler.replicas) -}}
{{- $out = append $out (printf "%s:%d" (include "joule.schedulerHost" (dict "ctx" $ctx "i" $i)) (int $ctx.Values.scheduler.port)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* KEY=VALUE,... from a map. */}}
{{- define "joule.labelList" -}}
{{- $out := list -}}
{{- range $k, $v := . -}}
{{- $out = append $out (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* Values that pass the schema but cannot work: refused with the value's name. */}}
{{- define "joule.validate" -}}
{{- $r := int .Values.scheduler.replicas -}}
{{- if not (has $r (list 1 3 5)) -}}
{{- fail (printf "scheduler.replicas: %d cannot keep a Raft majority through a failure; use 1, 3 or 5" $r) -}}
{{- end -}}
{{- range $i, $p := .Values.gpuPools -}}
{{- if not $p.resourceName -}}
{{- fail (printf "gpuPools[%d] (%s): resourceName is required (the device plugin's resource, e.g. nvidia.com/gpu)" $i $p.name) -}}
{{- end -}}
{{- if not $p.nodeSelector -}}
{{- fail (printf "gpuPools[%d] (%s): nodeSelector is required (which nodes carry this pool's GPUs)" $i $p.name) -}}
{{- end -}}
{{- end -}}
{{- $names := list -}}
{{- range .Values.gpuPools -}}
{{- if has .name $names -}}
{{- fail (printf "gpuPools: the pool name %q appears twice" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- if and .Values.tls.certManager.enabled .Values.tls.existingSecret -}}
{{- fail "tls: set tls.existingSecret or tls.certManager.enabled, not both" -}}
{{- end -}}
{{- if not (or .Values.tls.certManager.enabled .Values.tls.existingSecret) -}}
{{- fail "tls.enabled: no certificate source; set tls.existingSecret (a Secret with tls.crt, tls.key, ca.crt) or tls.certManager.enabled with tls.certManager.issuerRef.name" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.issuerRef.name is required with tls.certManager.enabled" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.gateway.autoscaling.enabled (lt (int .Values.gateway.autoscaling.maxReplicas) (int .Values.gateway.autoscaling.minReplicas)) -}}
{{- fail "gateway.autoscaling.maxReplicas must be at least gateway.autoscaling.minReplicas" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled .Values.networkPolicy.enabled (not .Values.networkPolicy.metricsFrom) -}}
{{- fail "serviceMonitor.enabled: set networkPolicy.metricsFrom to the peers Prometheus scrapes from (e.g. its namespace), or the NetworkPolicy keeps it out" -}}
{{- end -}}
{{- $sts := lookup "apps/v1" "StatefulSet" .Release.Namespace (printf "%s-scheduler" (include "joule.fullname" .)) -}}
{{- if and $sts (ne (int $sts.spec.replicas) $r) -}}
{{- fail (printf "scheduler.replicas: %d → %d on upgrade changes the Raft membership, which the chart does not do; keep %d (a new replica joins with `joule-scheduler --join` and `joulectl` adding it)" (int $sts.spec.replicas) $r (int $sts.spec.replicas)) -}}
{{- end -}}
{{- if and .Values.gateway.ingress.enabled (not .Values.gateway.ingress.hosts) -}}
{{- fail "gateway.ingress.enabled: gateway.ingress.hosts is empty (give at least one host)" -}}
{{- end -}}
{{- if and (not .Values.cpuWorkers.enabled) (not .Values.gpuPools) -}}
{{- fail "no workers: enable cpuWorkers or declare at least one of gpuPools" -}}
{{- end -}}
{{- $models := list -}}
{{- range .Values.models -}}
{{- $models = append $models .name -}}
{{- end -}}
{{- range .Values.deployments -}}
{{- if not (has .model $models) -}}
{{- fail (printf "deployments (%s): model %q is not in models" .name .model) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The pod security context every Joule pod runs with. */}}
{{- define "joule.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "joule.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* TLS environment and mounts (when tls.enabled). */}}
{{- define "joule.tlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: JOULE_TLS_CERT
  value: /etc/joule/tls/tls.crt
- name: JOULE_TLS_KEY
  value: /etc/joule/tls/tls.key
- name: JOULE_TLS_CA
  value: /etc/joule/tls/ca.crt
- name: JOULE_TLS_SERVER_NAME
  value: {{ .Values.tls.serverName | quote }}
{{- end }}
{{- end -}}

{{- define "joule.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/joule/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "joule.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "joule.tlsSecret" . }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* A token from the tokens Secret as an env var: (dict "ctx" $ "env" "JOULE_JOIN_TOKEN" "key" "join-token"). */}}
{{- define "joule.tokenEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "joule.tokensSecret" .ctx }}
      key: {{ .key }}
{{- end -}}

{{/* Extra env from a map. */}}
{{- define "joule.extraEnv" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/* The kubelet's gRPC probes (grpc.health.v1) on the plain health port. Start-up asks for
the server as a whole (""): SERVING once a worker's start-up models are loaded, a gateway's
routing view first synced, a scheduler's port open. Liveness asks for "@liveness", which every
daemon reports SERVING for as long as it answers at all (a drained worker is NOT_SERVING on ""
and must not be restarted for it). Readiness asks for "" or a narrower service (a scheduler:
joule.v1.Admin, SERVING while a leader is known). */}}
{{- define "joule.probes" -}}
startupProbe:
  grpc: {port: {{ .port }}}
  periodSeconds: 10
  failureThreshold: {{ div (int .startup) 10 }}
livenessProbe:
  grpc: {port: {{ .port }}, service: "@liveness"}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
readinessProbe:
  grpc:
    port: {{ .port }}
    {{- with .service }}
    service: {{ . }}
    {{- end }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}
