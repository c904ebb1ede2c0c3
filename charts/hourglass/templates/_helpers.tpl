{{/* Names and labels. */}}
{{- define "hourglass.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hourglass.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels every object has. */}}
{{- define "hourglass.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "hourglass.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hourglass
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The labels that select one component's pods: (dict "root" $ "component" "collector"). */}}
{{- define "hourglass.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hourglass.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hourglass.componentLabels" -}}
{{ include "hourglass.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hourglass.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* One TOML value from a values entry: strings quoted, integral numbers without an exponent (YAML numbers
     reach templates as float64, which would print 268435456 as 2.68435456e+08), lists as arrays. */}}
{{- define "hourglass.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- quote . -}}
{{- else if kindIs "bool" . -}}
{{- . -}}
{{- else if kindIs "float64" . -}}
{{- if eq (float64 (int64 .)) . -}}{{- int64 . -}}{{- else -}}{{- . -}}{{- end -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) -}}
{{- . -}}
{{- else if kindIs "slice" . -}}
[{{- range $index, $item := . }}{{ if $index }}, {{ end }}{{ include "hourglass.tomlValue" $item }}{{ end -}}]
{{- else -}}
{{- fail (printf "hourglass config: %v is not a string, number, boolean or list" .) -}}
{{- end -}}
{{- end -}}

{{/* The keys of a map as TOML lines, sorted. */}}
{{- define "hourglass.tomlTable" -}}
{{- range $key := keys . | sortAlpha }}
{{ $key }} = {{ include "hourglass.tomlValue" (get $ $key) }}
{{- end -}}
{{- end -}}

{{/* The whole hourglass.toml. */}}
{{- define "hourglass.configToml" -}}
{{- $v := .Values -}}
{{- $top := deepCopy $v.config -}}
{{- $_ := set $top "kafka-brokers" $v.kafka.brokers -}}
{{- $_ := set $top "kafka-events-topic" $v.kafka.eventsTopic -}}
{{- $_ := set $top "kafka-dead-letter-topic" $v.kafka.deadLetterTopic -}}
{{- $_ := set $top "kafka-create-topics" $v.kafka.createTopics -}}
{{- $_ := set $top "kafka-topic-partitions" $v.kafka.topicPartitions -}}
{{- $_ := set $top "kafka-replication-factor" $v.kafka.replicationFactor -}}
{{- $_ := set $top "cql-nodes" $v.cql.nodes -}}
{{- $_ := set $top "cql-keyspace" $v.cql.keyspace -}}
{{- $_ := set $top "cql-replication" $v.cql.replication -}}
{{- $_ := set $top "cql-buckets" $v.cql.buckets -}}
{{- $_ := set $top "cql-ttl-days" $v.cql.ttlDays -}}
{{- $_ := set $top "raw-retention-days" $v.cql.ttlDays -}}
{{- $_ := set $top "database-max-connections" $v.postgres.maxConnections -}}
# Hourglass configuration, rendered by the Helm chart from its values: keys are `hourglass <role> --help`'s
# long flags. Secrets (database URLs, Kafka options, the page-token secret) come from the environment.
{{- include "hourglass.tomlTable" $top }}
{{- range $role := list "collector" "ingestor" "aggregator" "query" }}

[{{ $role }}]
{{- include "hourglass.tomlTable" (merge (deepCopy (get $v.extraConfig $role)) (get (get $v $role) "config")) }}
{{- end }}
{{ end -}}

{{/* Environment of every hourglass container: the secrets. (dict "root" $ "role" "query") */}}
{{- define "hourglass.secretEnv" -}}
{{- $v := .root.Values -}}
- name: HOURGLASS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.postgres.secret.name }}
      key: {{ $v.postgres.secret.uriKey }}
{{- if and (eq .role "query") $v.postgres.readReplicaHost }}
# The read replica's URL, from the primary's credentials (Kubernetes expands $(NAME) from the variables above).
- name: PG_USERNAME
  valueFrom: {secretKeyRef: {name: {{ $v.postgres.secret.name }}, key: username}}
- name: PG_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $v.postgres.secret.name }}, key: password}}
- name: PG_PORT
  valueFrom: {secretKeyRef: {name: {{ $v.postgres.secret.name }}, key: port}}
- name: PG_DBNAME
  valueFrom: {secretKeyRef: {name: {{ $v.postgres.secret.name }}, key: dbname}}
- name: HOURGLASS_READ_DATABASE_URL
  value: {{ printf "postgresql://$(PG_USERNAME):$(PG_PASSWORD)@%s:$(PG_PORT)/$(PG_DBNAME)" $v.postgres.readReplicaHost | quote }}
{{- end }}
{{- if and (has .role (list "collector" "ingestor" "migrate")) $v.kafka.optionsSecret.name }}
- name: HOURGLASS_KAFKA_OPTIONS
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.optionsSecret.name }}
      key: {{ $v.kafka.optionsSecret.key }}
{{- end }}
{{- if and (has .role (list "query" "aggregator")) $v.erasure.saltSecret.name }}
- name: HOURGLASS_ERASURE_SALT
  valueFrom:
    secretKeyRef:
      name: {{ $v.erasure.saltSecret.name }}
      key: {{ $v.erasure.saltSecret.key }}
{{- end }}
{{- if and (eq .role "query") $v.query.pageTokenSecret.name }}
- name: HOURGLASS_PAGE_TOKEN_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $v.query.pageTokenSecret.name }}
      key: {{ $v.query.pageTokenSecret.key }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by the hourglass roles: (dict "root" $ "component" "collector"). */}}
{{- define "hourglass.podPlacement" -}}
{{- $v := .root.Values -}}
topologySpreadConstraints:
  - maxSkew: {{ $v.topologySpread.zone.maxSkew }}
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: {{ $v.topologySpread.zone.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "hourglass.selectorLabels" . | nindent 8 }}
    # Spread each rollout's new pods too, not only all of them together.
    matchLabelKeys: [pod-template-hash]
  - maxSkew: {{ $v.topologySpread.node.maxSkew }}
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: {{ $v.topologySpread.node.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "hourglass.selectorLabels" . | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* The config volume (pod level). */}}
{{- define "hourglass.configVolume" -}}
- name: config
  configMap:
    name: {{ include "hourglass.fullname" . }}-config
{{- end -}}
