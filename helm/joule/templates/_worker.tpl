{{/* The worker pod spec, shared by the CPU Deployment and each GPU pool's DaemonSet:
(dict "ctx" $ "pool" <pool or nil> "image" <image> "pullPolicy" <policy> "labels" <map>
 "resources" <map> "env" <map> "sel" <selector dict>). */}}
{{- define "joule.workerPod" -}}
{{- $ctx := .ctx -}}
{{- $fullname := include "joule.fullname" $ctx -}}
metadata:
  labels:
    {{- include "joule.labels" $ctx | nindent 4 }}
    {{- include "joule.selector" .sel | nindent 4 }}
    joule.dev/role: worker
    {{- with .pool }}
    joule.dev/gpu-pool: {{ .name }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $ctx.Template.BasePath "/configmaps.yaml") $ctx | sha256sum }}
    {{- with .annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- include "joule.podSecurity" $ctx | nindent 4 }}
  {{- with $ctx.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  # A worker drains its streams before it exits (--drain-timeout-s, 30 s by default).
  terminationGracePeriodSeconds: 45
  containers:
    - name: worker
      image: {{ .image }}
      imagePullPolicy: {{ .pullPolicy }}
      command: [joule-worker]
      env:
        - name: POD_IP
          valueFrom:
            fieldRef: {fieldPath: status.podIP}
        # A GPU pool's worker is named after its Kubernetes node (one per node, the same name
        # after a restart); a CPU worker after its pod.
        - name: JOULE_NODE_NAME
          valueFrom:
            fieldRef: {fieldPath: {{ if .pool }}spec.nodeName{{ else }}metadata.name{{ end }}}
        # Gateways reach the worker by pod IP (its certificate carries tls.serverName); on an
        # IPv6 cluster the address rules bracket the bare pod IP before the port.
        - name: JOULE_ADVERTISE
          value: {{ printf "$(POD_IP):%d" (int $ctx.Values.worker.port) | quote }}
        - name: JOULE_LABELS
          value: {{ include "joule.labelList" .labels | quote }}
        {{- with .pool }}
        - name: JOULE_DEVICE
          value: cuda:0
        - name: JOULE_POWER_SENSOR
          value: auto
        {{- end }}
        {{- with .threads }}
        - name: JOULE_THREADS
          value: {{ . | quote }}
        {{- end }}
        {{- include "joule.tokenEnv" (dict "ctx" $ctx "env" "JOULE_JOIN_TOKEN" "key" "join-token") | nindent 8 }}
        {{- include "joule.tlsEnv" $ctx | indent 8 }}
        {{- include "joule.extraEnv" .env | indent 8 }}
      envFrom:
        - configMapRef:
            name: {{ $fullname }}-worker
      ports:
        - name: grpc
          containerPort: {{ $ctx.Values.worker.port }}
        - name: metrics
          containerPort: {{ $ctx.Values.worker.metricsPort }}
        - name: health
          containerPort: {{ $ctx.Values.worker.healthPort }}
      {{- include "joule.probes" (dict "port" $ctx.Values.worker.healthPort "startup" $ctx.Values.worker.startupSeconds) | nindent 6 }}
      securityContext:
        {{- include "joule.containerSecurity" $ctx | nindent 8 }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      volumeMounts:
        - name: cache
          mountPath: /cache
        - name: tmp
          mountPath: /tmp
        {{- include "joule.tlsMount" $ctx | indent 8 }}
  volumes:
    - name: tmp
      emptyDir: {}
    {{- include "joule.tlsVolume" $ctx | indent 4 }}
    {{- if .cacheClaim }}
    - name: cache
      persistentVolumeClaim:
        claimName: {{ .cacheClaim }}
    {{- else }}
    - name: cache
      emptyDir:
        sizeLimit: {{ .cacheSize | default "20Gi" }}
    {{- end }}
{{- end -}}
