{{/*
One hourglass role as a Deployment. Parameters (a dict):
  root        the chart's context ($)
  component   the pod label and name suffix (collector, ingestor, aggregator, ledger-verifier, query)
  role        the subcommand and the values section (collector, ingestor, aggregator, query)
  values      the role's values (replicas, resources, terminationGracePeriodSeconds, ...)
  grpcPort    the port probed with gRPC health (absent: the aggregator, probed over its metrics HTTP endpoint)
  grpcPortName, healthService   the port's name and the health service name the readiness probe asks about
  extraEnv    more environment variables (a list), optional
*/}}
{{- define "hourglass.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $values := .values -}}
{{- $selector := dict "root" $root "component" .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "hourglass.fullname" $root }}-{{ .component }}
  labels:
    {{- include "hourglass.componentLabels" $selector | nindent 4 }}
spec:
  {{- if not (and $values.autoscaling $values.autoscaling.enabled) }}
  replicas: {{ .replicas | default $values.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "hourglass.selectorLabels" $selector | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # A new pod must be Ready before an old one stops: capacity never drops during a deploy.
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "hourglass.componentLabels" $selector | nindent 8 }}
      annotations:
        # A changed configuration rolls the pods (they read the file only at start).
        checksum/config: {{ include "hourglass.configToml" $root | sha256sum }}
    spec:
      {{- include "hourglass.podPlacement" $selector | nindent 6 }}
      terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .role }}
          image: {{ include "hourglass.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: ["--config", "/etc/hourglass/hourglass.toml", {{ .role | quote }}]
          env:
            {{- include "hourglass.secretEnv" (dict "root" $root "role" .role) | nindent 12 }}
            {{- with .extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            {{- if .grpcPort }}
            - name: {{ .grpcPortName }}
              containerPort: {{ .grpcPort }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ $v.metrics.port }}
              protocol: TCP
          {{- if .grpcPort }}
          readinessProbe:
            {{- if eq $v.probes.readiness.kind "exec" }}
            exec:
              command: ["/usr/local/bin/hourglass", "health", "--target", "http://127.0.0.1:{{ .grpcPort }}", "--service", {{ .healthService | quote }}, "--timeout-secs", "{{ $v.probes.readiness.timeoutSeconds }}"]
            {{- else if eq $v.probes.readiness.kind "grpc" }}
            grpc:
              port: {{ .grpcPort }}
              service: {{ .healthService | quote }}
            {{- else }}
            {{- fail (printf "probes.readiness.kind must be grpc or exec, not %q" $v.probes.readiness.kind) }}
            {{- end }}
            periodSeconds: {{ $v.probes.readiness.periodSeconds }}
            failureThreshold: {{ $v.probes.readiness.failureThreshold }}
            timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
          livenessProbe:
            tcpSocket:
              port: {{ .grpcPortName }}
            periodSeconds: {{ $v.probes.liveness.periodSeconds }}
            failureThreshold: {{ $v.probes.liveness.failureThreshold }}
            timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
          {{- else }}
          # No gRPC server here: the Prometheus endpoint answering shows the process and its runtime are up.
          # Its backends are not checked (nothing routes to it; a worker waiting for Postgres is not broken).
          readinessProbe:
            httpGet:
              path: /metrics
              port: metrics
            periodSeconds: {{ $v.probes.readiness.periodSeconds }}
            failureThreshold: {{ $v.probes.readiness.failureThreshold }}
            timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
          livenessProbe:
            httpGet:
              path: /metrics
              port: metrics
            periodSeconds: {{ $v.probes.liveness.periodSeconds }}
            failureThreshold: {{ $v.probes.liveness.failureThreshold }}
            timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
          {{- end }}
          {{- if $values.preStopSleepSecs }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $values.preStopSleepSecs }}
          {{- end }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/hourglass
              readOnly: true
            # The root filesystem is read-only; anything a library writes to a temporary file goes here.
            - name: tmp
              mountPath: /tmp
      volumes:
        {{- include "hourglass.configVolume" $root | nindent 8 }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
{{- end -}}

{{/* A headless Service for one component: Envoy resolves every ready pod through it, and Prometheus finds
     the metrics port. (dict "root" $ "component" "collector" "grpcPort" 50051 "grpcPortName" "grpc") */}}
{{- define "hourglass.headlessService" -}}
{{- $selector := dict "root" .root "component" .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "hourglass.fullname" .root }}-{{ .component }}-headless
  labels:
    {{- include "hourglass.componentLabels" $selector | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "hourglass.selectorLabels" $selector | nindent 4 }}
  ports:
    {{- if .grpcPort }}
    - name: {{ .grpcPortName }}
      port: {{ .grpcPort }}
      targetPort: {{ .grpcPortName }}
      appProtocol: kubernetes.io/h2c
    {{- end }}
    - name: metrics
      port: {{ .root.Values.metrics.port }}
      targetPort: metrics
{{- end -}}

{{/* A PodDisruptionBudget for one component. */}}
{{- define "hourglass.pdb" -}}
{{- $selector := dict "root" .root "component" .component -}}
{{- if .root.Values.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "hourglass.fullname" .root }}-{{ .component }}
  labels:
    {{- include "hourglass.componentLabels" $selector | nindent 4 }}
spec:
  maxUnavailable: {{ .root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "hourglass.selectorLabels" $selector | nindent 6 }}
{{- end }}
{{- end -}}

{{/* A CPU HorizontalPodAutoscaler for one component, when its autoscaling is enabled. */}}
{{- define "hourglass.hpa" -}}
{{- $selector := dict "root" .root "component" .component -}}
{{- if .values.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "hourglass.fullname" .root }}-{{ .component }}
  labels:
    {{- include "hourglass.componentLabels" $selector | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "hourglass.fullname" .root }}-{{ .component }}
  minReplicas: {{ .values.autoscaling.minReplicas }}
  maxReplicas: {{ .values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .values.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    # Scale down slowly: a replica removed drains its streams (up to the grace period), and traffic
    # falling for a few minutes is often a lull before the next peak.
    scaleDown:
      stabilizationWindowSeconds: 300
      policies:
        - type: Pods
          value: 1
          periodSeconds: 60
{{- end }}
{{- end -}}
